//! The web UI's pages and files as the gateway serves them: the signed-in pages send a visitor
//! without a session to the login page and back, every page is served under the strict CSP,
//! and every script and style sheet a page names is served. (What the pages do in a browser is
//! tested in `tests/e2e`.)

use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};

use crate::harness::TestGateway;

const PAGES: &[&str] = &["/auth/login", "/auth/account", "/auth/org"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_pages_send_a_visitor_without_a_session_to_the_login_page_and_back() {
    let gw = TestGateway::start().await;
    let client = gw.client();
    for (page, next) in [
        ("/auth/account", "%2Fauth%2Faccount"),
        ("/auth/org", "%2Fauth%2Forg"),
    ] {
        let resp = client
            .get(gw.url(page))
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302, "{page}");
        assert_eq!(
            resp.headers()[LOCATION],
            format!("/auth/login?next={next}"),
            "{page}"
        );
    }
    // A cookie that names no live session is no better.
    let resp = client
        .get(gw.url("/auth/account"))
        .header("Cookie", format!("xgw_session=xgs_{}", "A".repeat(43)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_served_under_the_strict_csp_with_every_file_it_names() {
    let gw = TestGateway::start().await;
    let (_org, _admin, client, _csrf) = gw.admin_session().await;
    for page in PAGES {
        let resp = client.get(gw.url(page)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{page}");
        let headers = resp.headers().clone();
        assert!(headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{page}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{page}: {csp}");
        assert_eq!(headers["x-frame-options"], "DENY", "{page}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{page}");

        let html = resp.text().await.unwrap();
        assert!(!html.contains("style="), "{page}: an inline style");
        // Every script is a file of ours; no inline code.
        let scripts: Vec<&str> = html.split("<script").skip(1).collect();
        assert!(!scripts.is_empty(), "{page}: no script");
        for tag in scripts {
            assert!(
                tag.contains("src=\"/auth/ui/"),
                "{page}: inline script {tag}"
            );
        }
        for asset in referenced_files(&html) {
            let resp = client.get(gw.url(&asset)).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{page}: {asset}");
            let kind = resp.headers()[CONTENT_TYPE].to_str().unwrap().to_string();
            let expected = if asset.ends_with(".css") {
                "text/css"
            } else {
                "text/javascript"
            };
            assert!(kind.starts_with(expected), "{asset}: {kind}");
            // Modules import the shared file: it must be served too.
            let body = resp.text().await.unwrap();
            for import in body.split("from \"").skip(1) {
                let path = import.split('"').next().unwrap();
                let status = client.get(gw.url(path)).send().await.unwrap().status();
                assert_eq!(status, 200, "{asset} imports {path}");
            }
        }
    }
}

/// The `/auth/ui/...` paths in `src="..."` and `href="..."` of a page.
fn referenced_files(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let value = part.split('"').next().unwrap_or("");
            if value.starts_with("/auth/ui/") {
                out.push(value.to_string());
            }
        }
    }
    assert!(out.len() >= 2, "a page names its script and style sheet");
    out
}
