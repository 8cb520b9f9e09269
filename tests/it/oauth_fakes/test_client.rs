//! The client side of the self-tests: a code flow with PKCE done by hand.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::Rng;
use reqwest::Url;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;

pub(super) const CLIENT_ID: &str = "xgw-test.apps.example.test";
/// Characters that HTTP Basic client auth must form-urlencode (RFC 6749 §2.3.1).
pub(super) const CLIENT_SECRET: &str = "s3cr:t+/= &%ü";
/// A callback that already has a query: the code and state are added to it.
pub(super) const CALLBACK: &str = "http://127.0.0.1:9/auth/oauth/callback?provider=test";
pub(super) const NONCE: &str = "n-0S6_WzA2Mj";

pub(super) struct Pkce {
    pub(super) verifier: String,
    pub(super) challenge: String,
}

/// The client side of RFC 7636, written out here rather than borrowed from the fake.
pub(super) fn new_pkce() -> Pkce {
    let bytes: [u8; 32] = rand::thread_rng().gen();
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

pub(super) fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub(super) fn basic(id: &str, secret: &str) -> String {
    let enc = |v: &str| form_encode(&[("v", v)])["v=".len()..].to_string();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

pub(super) fn url_with(endpoint: &str, params: &[(&str, String)]) -> String {
    Url::parse_with_params(endpoint, params)
        .unwrap()
        .to_string()
}

pub(super) fn without(
    params: &[(&'static str, String)],
    name: &str,
) -> Vec<(&'static str, String)> {
    params.iter().filter(|(k, _)| *k != name).cloned().collect()
}

pub(super) fn replaced(
    params: &[(&'static str, String)],
    name: &str,
    value: &str,
) -> Vec<(&'static str, String)> {
    let mut p = without(params, name);
    p.push((
        params.iter().find(|(k, _)| *k == name).unwrap().0,
        value.to_string(),
    ));
    p
}

pub(super) async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}
