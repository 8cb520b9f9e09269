//! SMS delivery against real HTTP: a local receiver for the webhook backend and a local stand-in
//! of Twilio's Messages API. No gateway and no Redis: this is the delivery layer on its own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use xelon_gateway::clock::{Clock, ManualClock, SharedClock};
use xelon_gateway::sms::{
    sender_from_config, SmsConfig, SmsError, SmsProvider, SmsSender, Timeouts, TwilioFrom,
    TwilioSender, WebhookSender,
};

const TO: &str = "+41791234567";
const MESSAGE: &str = "Your Xelon HQ code is 123456";
const HMAC_SECRET: &str = "test-hmac-secret-0123456789abcdef0123";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const MG: &str = "MG0123456789abcdef0123456789abcdef";

#[derive(Debug, Clone)]
struct Received {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<Received>>>,
    status: StatusCode,
    answer: &'static str,
    extra: Option<(&'static str, &'static str)>,
}

async fn record(
    State(r): State<Receiver>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    r.seen.lock().unwrap().push(Received {
        method,
        uri,
        headers,
        body,
    });
    let mut response = (r.status, r.answer).into_response();
    if let Some((name, value)) = r.extra {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// A receiver on 127.0.0.1:<free port> that records each request and answers `status`/`answer`.
async fn receiver(
    status: StatusCode,
    answer: &'static str,
    extra: Option<(&'static str, &'static str)>,
) -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = Receiver {
        seen: seen.clone(),
        status,
        answer,
        extra,
    };
    let app = Router::new().fallback(record).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, seen)
}

fn only(seen: &Arc<Mutex<Vec<Received>>>) -> Received {
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "expected exactly one request, got {seen:?}");
    seen[0].clone()
}

fn header<'a>(r: &'a Received, name: &str) -> Option<&'a str> {
    r.headers.get(name).map(|v| v.to_str().unwrap())
}

/// The receiver side of the documented scheme, written from the doc rather than from the code.
fn verify_signature(header: &str, body: &[u8], secret: &str, now: i64) -> Result<(), String> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v),
            Some(("v1", v)) => v1 = Some(v),
            _ => return Err(format!("unexpected part {part:?}")),
        }
    }
    let (t, v1) = (t.ok_or("no t")?, v1.ok_or("no v1")?);
    let ts: i64 = t.parse().map_err(|_| "t is not a number")?;
    if (now - ts).abs() > 300 {
        return Err("stale timestamp".into());
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let sig = hex::decode(v1).map_err(|_| "v1 is not hex")?;
    mac.verify_slice(&sig)
        .map_err(|_| "signature mismatch".into())
}

fn webhook(
    url: &str,
    token: Option<&str>,
    secret: Option<&str>,
    clock: SharedClock,
) -> WebhookSender {
    WebhookSender::new(url, token, secret, clock, Timeouts::default()).unwrap()
}

#[tokio::test]
async fn webhook_posts_json_with_bearer_token_and_a_signature_a_receiver_can_verify() {
    let (addr, seen) = receiver(StatusCode::NO_CONTENT, "", None).await;
    let clock = ManualClock::new();
    let sender = webhook(
        &format!("http://{addr}/sms/send?tenant=a"),
        Some("tok-123"),
        Some(HMAC_SECRET),
        clock.clone(),
    );
    assert_eq!(sender.name(), "webhook");
    sender.send(TO, MESSAGE).await.unwrap();

    let r = only(&seen);
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.uri.to_string(), "/sms/send?tenant=a");
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    assert_eq!(header(&r, "authorization"), Some("Bearer tok-123"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body, serde_json::json!({ "to": TO, "message": MESSAGE }));

    let sig = header(&r, "x-xgw-signature").expect("signature header");
    assert!(sig.starts_with(&format!("t={},v1=", clock.now())), "{sig}");
    verify_signature(sig, &r.body, HMAC_SECRET, clock.now()).unwrap();
    // The signature binds the body, the timestamp and the key.
    let mut tampered = r.body.to_vec();
    let last = tampered.len() - 2;
    tampered[last] ^= 1;
    assert!(verify_signature(sig, &tampered, HMAC_SECRET, clock.now()).is_err());
    let replayed_later = sig.replacen(
        &format!("t={}", clock.now()),
        &format!("t={}", clock.now() + 600),
        1,
    );
    assert!(verify_signature(&replayed_later, &r.body, HMAC_SECRET, clock.now() + 600).is_err());
    assert!(verify_signature(
        sig,
        &r.body,
        "another-secret-0123456789abcdef0123",
        clock.now()
    )
    .is_err());
    // A receiver refuses an old request even with a valid signature.
    assert!(verify_signature(sig, &r.body, HMAC_SECRET, clock.now() + 301).is_err());
}

#[tokio::test]
async fn webhook_without_token_or_secret_sends_neither_header() {
    let (addr, seen) = receiver(StatusCode::OK, "ok", None).await;
    webhook(&format!("http://{addr}/"), None, None, ManualClock::new())
        .send(TO, MESSAGE)
        .await
        .unwrap();
    let r = only(&seen);
    assert_eq!(header(&r, "authorization"), None);
    assert_eq!(header(&r, "x-xgw-signature"), None);
}

#[tokio::test]
async fn webhook_non_2xx_is_an_error_carrying_only_the_status() {
    for status in [
        StatusCode::BAD_REQUEST,
        StatusCode::UNAUTHORIZED,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        let (addr, seen) = receiver(status, "details about +41791234567", None).await;
        let err = webhook(
            &format!("http://{addr}/hook/tok-in-path"),
            Some("tok-123"),
            Some(HMAC_SECRET),
            ManualClock::new(),
        )
        .send(TO, MESSAGE)
        .await
        .unwrap_err();
        assert!(
            matches!(err, SmsError::Rejected { status: s, code: None } if s == status.as_u16()),
            "{err:?}"
        );
        let text = format!("{err} {err:?}");
        for leak in [
            "tok-123",
            "tok-in-path",
            HMAC_SECRET,
            TO,
            "123456",
            "127.0.0.1",
        ] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn webhook_redirect_is_an_error_and_is_not_followed() {
    let (target, target_seen) = receiver(StatusCode::OK, "", None).await;
    let location: &'static str = Box::leak(format!("http://{target}/elsewhere").into_boxed_str());
    let (addr, seen) = receiver(StatusCode::FOUND, "", Some(("location", location))).await;
    let err = webhook(
        &format!("http://{addr}/"),
        Some("tok-123"),
        None,
        ManualClock::new(),
    )
    .send(TO, MESSAGE)
    .await
    .unwrap_err();
    assert!(
        matches!(err, SmsError::Rejected { status: 302, .. }),
        "{err:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(target_seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn unreachable_receiver_is_an_error_within_the_timeout() {
    // A port that was just free and is now closed: the connection is refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let started = Instant::now();
    let err = webhook(
        &format!("http://{closed}/hook/tok-in-path"),
        Some("tok-123"),
        None,
        ManualClock::new(),
    )
    .send(TO, MESSAGE)
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Timeouts::default().total,
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, SmsError::Transport(_)), "{err:?}");
    // Neither the message nor the URL (which may hold a token) shows up in the error chain.
    let mut text = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(&format!(" {s}"));
        source = s.source();
    }
    assert!(
        !text.contains("tok-in-path") && !text.contains(TO),
        "{text}"
    );

    let err = TwilioSender::new(
        &format!("http://{closed}"),
        SID,
        "tw-token",
        TwilioFrom::Number("+15005550006".into()),
        Timeouts::default(),
    )
    .unwrap()
    .send(TO, MESSAGE)
    .await
    .unwrap_err();
    assert!(matches!(err, SmsError::Transport(_)), "{err:?}");
}

#[tokio::test]
async fn a_receiver_that_never_answers_is_a_timeout() {
    // Accepts connections and reads nothing: the request hangs until the total timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let timeouts = Timeouts {
        connect: Duration::from_millis(500),
        total: Duration::from_millis(700),
    };
    let sender = WebhookSender::new(
        &format!("http://{addr}/"),
        None,
        None,
        ManualClock::new(),
        timeouts,
    )
    .unwrap();
    let started = Instant::now();
    let err = sender.send(TO, MESSAGE).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, SmsError::Timeout), "{err:?}");
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

fn basic_auth(r: &Received) -> String {
    let value = header(r, "authorization").expect("authorization header");
    let encoded = value.strip_prefix("Basic ").expect("basic auth");
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap()
}

fn form(r: &Received) -> Vec<(String, String)> {
    assert_eq!(
        header(r, "content-type"),
        Some("application/x-www-form-urlencoded")
    );
    serde_urlencoded_pairs(&r.body)
}

/// Form decoding written out here so the test does not trust the sender's encoder.
fn serde_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }
    std::str::from_utf8(body)
        .unwrap()
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (decode(k), decode(v))
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const TWILIO_CREATED: &str = r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}"#;

#[tokio::test]
async fn twilio_posts_the_form_with_basic_auth_to_the_messages_api() {
    let (addr, seen) = receiver(StatusCode::CREATED, TWILIO_CREATED, None).await;
    let sender = TwilioSender::new(
        &format!("http://{addr}"),
        SID,
        "tw-token",
        TwilioFrom::Number("+15005550006".into()),
        Timeouts::default(),
    )
    .unwrap();
    assert_eq!(sender.name(), "twilio");
    sender.send(TO, MESSAGE).await.unwrap();

    let r = only(&seen);
    assert_eq!(r.method, Method::POST);
    assert_eq!(
        r.uri.path(),
        format!("/2010-04-01/Accounts/{SID}/Messages.json")
    );
    assert_eq!(basic_auth(&r), format!("{SID}:tw-token"));
    let mut fields = form(&r);
    fields.sort();
    assert_eq!(
        fields,
        pairs(&[("Body", MESSAGE), ("From", "+15005550006"), ("To", TO)])
    );
}

#[tokio::test]
async fn twilio_messaging_service_replaces_from() {
    let (addr, seen) = receiver(StatusCode::CREATED, TWILIO_CREATED, None).await;
    let cfg = SmsConfig {
        provider: SmsProvider::Twilio,
        twilio_account_sid: Some(SID.into()),
        twilio_auth_token: Some("tw-token".into()),
        twilio_messaging_service_sid: Some(MG.into()),
        twilio_base_url: format!("http://{addr}"),
        ..SmsConfig::default()
    };
    let sender = sender_from_config(&cfg, ManualClock::new())
        .unwrap()
        .unwrap();
    sender.send(TO, MESSAGE).await.unwrap();
    let mut fields = form(&only(&seen));
    fields.sort();
    assert_eq!(
        fields,
        pairs(&[("Body", MESSAGE), ("MessagingServiceSid", MG), ("To", TO)])
    );
}

#[tokio::test]
async fn twilio_errors_keep_the_status_and_twilio_code_only() {
    let cases: [(StatusCode, &'static str, Option<i64>); 4] = [
        (
            StatusCode::BAD_REQUEST,
            r#"{"code":21211,"message":"The 'To' number +41791234567 is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#,
            Some(21211),
        ),
        (
            StatusCode::UNAUTHORIZED,
            r#"{"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401}"#,
            Some(20003),
        ),
        (StatusCode::BAD_GATEWAY, "<html>bad gateway</html>", None),
        (
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"message":"slow down"}"#,
            None,
        ),
    ];
    for (status, answer, code) in cases {
        let (addr, _) = receiver(status, answer, None).await;
        let err = TwilioSender::new(
            &format!("http://{addr}"),
            SID,
            "tw-token",
            TwilioFrom::Number("+15005550006".into()),
            Timeouts::default(),
        )
        .unwrap()
        .send(TO, MESSAGE)
        .await
        .unwrap_err();
        match &err {
            SmsError::Rejected { status: s, code: c } => {
                assert_eq!((*s, *c), (status.as_u16(), code), "{answer}");
            }
            other => panic!("{other:?}"),
        }
        let text = format!("{err} {err:?}");
        assert!(!text.contains("tw-token") && !text.contains(TO), "{text}");
        if let Some(code) = code {
            assert!(text.contains(&code.to_string()), "{text}");
        }
    }
}

#[tokio::test]
async fn configured_webhook_signs_with_the_injected_clock() {
    let (addr, seen) = receiver(StatusCode::ACCEPTED, "", None).await;
    let clock = ManualClock::new();
    clock.advance(12_345);
    let cfg = SmsConfig {
        provider: SmsProvider::Webhook,
        webhook_url: Some(format!("http://{addr}/hook")),
        webhook_hmac_secret: Some(HMAC_SECRET.into()),
        ..SmsConfig::default()
    };
    let sender = sender_from_config(&cfg, clock.clone()).unwrap().unwrap();
    sender.send(TO, MESSAGE).await.unwrap();
    let r = only(&seen);
    let sig = header(&r, "x-xgw-signature").unwrap();
    assert!(sig.starts_with(&format!("t={},", clock.now())), "{sig}");
    verify_signature(sig, &r.body, HMAC_SECRET, clock.now()).unwrap();
}
