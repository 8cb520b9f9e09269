//! Organization admins create users in their organization, list the members and remove them.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{get, send, try_login, TestGateway};

fn users_path(org: &str) -> String {
    format!("/auth/api/v1/orgs/{org}/users")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_creates_a_member_who_can_sign_in_and_is_listed() {
    let gw = TestGateway::start().await;
    let (org, admin_user, admin, csrf) = gw.admin_session().await;
    let (status, created) = send(
        &gw,
        &admin,
        Method::POST,
        &users_path(&org.id),
        &csrf,
        Some(json!({
            "first_name": "Grace", "last_name": "Hopper", "email": "Grace@Acme.test",
            "job_title": "Engineer", "timezone": "europe/zurich", "mobile_phone": "+41791234567",
            "role": "member", "permissions": ["allowManageServiceTokens"],
            "password": "Initial-Password-42"
        })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert!(created["id"].as_str().unwrap().starts_with("usr_"));
    assert_eq!(created["email"], "Grace@Acme.test");
    assert_eq!(created["timezone"], "Europe/Zurich");
    assert_eq!(created["role"], "member");
    assert_eq!(created["permissions"], json!(["allowManageServiceTokens"]));
    assert_eq!(created["has_password"], true);
    assert!(created.get("password").is_none() && created.get("password_hash").is_none());

    let (status, _) = try_login(&gw, &gw.client(), "grace@acme.test", "Initial-Password-42").await;
    assert_eq!(
        status, 200,
        "the new member signs in with the initial password"
    );

    // Without a password: listed, but cannot sign in with one.
    let (status, created2) = send(
        &gw,
        &admin,
        Method::POST,
        &users_path(&org.id),
        &csrf,
        Some(
            json!({ "first_name": "Oauth", "last_name": "Only", "email": "oauth@acme.test",
                     "role": "admin" }),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created2}");
    assert_eq!(created2["has_password"], false);
    assert_eq!(created2["role"], "admin");

    let (status, list) = get(&gw, &admin, &users_path(&org.id)).await;
    assert_eq!(status, 200);
    let emails: Vec<&str> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        ["admin@acme.test", "Grace@Acme.test", "oauth@acme.test"]
    );
    let me = &list["members"][0];
    assert_eq!(me["id"], admin_user.id.as_str());
    assert_eq!(me["role"], "admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_creation_checks_every_field_and_email_uniqueness() {
    let gw = TestGateway::start().await;
    let (org, _, admin, csrf) = gw.admin_session().await;
    let (status, body) = send(
        &gw,
        &admin,
        Method::POST,
        &users_path(&org.id),
        &csrf,
        Some(json!({ "last_name": "", "email": "x@", "role": "owner",
                     "permissions": ["allowEverything"], "password": "short", "shoe_size": 9 })),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_profile");
    let fields = body["fields"].as_object().unwrap();
    let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "email",
            "first_name",
            "last_name",
            "password",
            "permissions",
            "role",
            "shoe_size"
        ]
    );
    assert_eq!(fields["first_name"], "required");
    let password_rule = fields["password"].as_str().unwrap();
    assert!(password_rule.contains("at least 12 characters") && password_rule.contains("a digit"));

    for email in ["admin@acme.test", "ADMIN@acme.TEST"] {
        let (status, body) = send(
            &gw,
            &admin,
            Method::POST,
            &users_path(&org.id),
            &csrf,
            Some(json!({ "first_name": "A", "last_name": "B", "email": email })),
        )
        .await;
        assert_eq!(
            (status, body["error"].clone()),
            (409, json!("email_taken")),
            "{email}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_that_organizations_admins_manage_its_members() {
    let gw = TestGateway::start().await;
    let (org, _, _, _) = gw.admin_session().await;
    gw.create_user(&org, "member@acme.test", false).await;
    let member = gw.client();
    let login = gw.login(&member, "member@acme.test").await;
    let csrf = login["csrf_token"].as_str().unwrap();
    let body = json!({ "first_name": "A", "last_name": "B", "email": "new@acme.test" });
    let (status, _) = send(
        &gw,
        &member,
        Method::POST,
        &users_path(&org.id),
        csrf,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = get(&gw, &member, &users_path(&org.id)).await;
    assert_eq!(status, 403);
    let (status, _) = get(&gw, &member, &users_path("org_doesnotexist")).await;
    assert_eq!(status, 404);
    let (status, _) = get(&gw, &gw.client(), &users_path(&org.id)).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_no_longer_listed() {
    let gw = TestGateway::start().await;
    let (org, _, admin, csrf) = gw.admin_session().await;
    let member = gw.create_user(&org, "member@acme.test", false).await;
    let (status, _) = send(
        &gw,
        &admin,
        Method::DELETE,
        &format!("{}/{}", users_path(&org.id), member.id),
        &csrf,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (_, list) = get(&gw, &admin, &users_path(&org.id)).await;
    let ids: Vec<&Value> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert!(!ids.contains(&&json!(member.id)), "{list}");
    assert_eq!(ids.len(), 1);
}
