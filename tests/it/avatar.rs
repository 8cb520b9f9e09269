//! Avatars: what a client uploads is decoded and re-encoded, never served back verbatim (no
//! trailing junk, no EXIF or comments), scaled to fit 512×512, within size and type limits.

use std::io::Cursor;
use std::time::Duration;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{send, status_json, TestGateway};

const MINE: &str = "/auth/api/v1/me/avatar";
const MIB: usize = 1024 * 1024;

fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn gradient_png(w: u32, h: u32) -> Vec<u8> {
    let img = RgbaImage::from_fn(w, h, |x, y| {
        Rgba([(x % 256) as u8, (y % 256) as u8, 90, 255])
    });
    encode(DynamicImage::ImageRgba8(img), ImageFormat::Png)
}

/// Noise does not compress: a PNG of about `w * h * 3` bytes.
fn noise_png(w: u32, h: u32) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    let img = RgbImage::from_fn(w, h, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [a, b, c, _] = state.to_le_bytes();
        Rgb([a, b, c])
    });
    encode(DynamicImage::ImageRgb8(img), ImageFormat::Png)
}

/// A JPEG whose APP1 carries EXIF (orientation: rotate 90°, and a "GPS" marker string) and
/// which has a comment segment.
fn jpeg_with_exif_and_comment(w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, _| Rgb([(x * 4) as u8, 20, 200]));
    let jpeg = encode(DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
    let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
    exif.extend_from_slice(&[0, 1]); // one IFD entry
    exif.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]); // Orientation = 6
    exif.extend_from_slice(&[0, 0, 0, 0]); // no next IFD
    exif.extend_from_slice(b"GPS-SECRET-47.3769N-8.5417E");
    let segment = |marker: u8, payload: &[u8]| {
        let len = (payload.len() + 2) as u16;
        [&[0xff, marker][..], &len.to_be_bytes(), payload].concat()
    };
    [
        &jpeg[..2],
        &segment(0xe1, &exif),
        &segment(0xfe, b"COMMENT-SECRET shot on a secret phone"),
        &jpeg[2..],
    ]
    .concat()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn upload(
    gw: &TestGateway,
    client: &reqwest::Client,
    csrf: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let resp = client
        .put(gw.url(MINE))
        .header("X-CSRF-Token", csrf)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    status_json(resp).await
}

/// Fetches a user's avatar: (status, headers, bytes).
async fn fetch(
    gw: &TestGateway,
    client: &reqwest::Client,
    user_id: &str,
    if_none_match: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = client.get(gw.url(&format!("/auth/api/v1/users/{user_id}/avatar")));
    if let Some(etag) = if_none_match {
        req = req.header("If-None-Match", etag);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_png_with_trailing_junk_comes_back_clean_and_scaled_to_fit() {
    let gw = TestGateway::start().await;
    let (_, user, client, csrf) = gw.admin_session().await;
    let mut sent = gradient_png(800, 600);
    sent.extend_from_slice(b"<html><script>alert('JUNK')</script></html>");
    let (status, body) = upload(&gw, &client, &csrf, "image/png", sent.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content_type"], "image/png");
    assert_eq!(
        (body["width"].as_u64(), body["height"].as_u64()),
        (Some(512), Some(384))
    );
    assert_eq!(
        body["avatar_url"],
        format!("/auth/api/v1/users/{}/avatar", user.id).as_str()
    );

    let (status, headers, served) = fetch(&gw, &client, &user.id, None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["cache-control"], "private, no-cache");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let etag = headers["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", body["etag"].as_str().unwrap()));
    assert_ne!(served, sent);
    assert!(!contains(&served, b"JUNK") && !contains(&served, b"<script>"));
    let decoded = image::load_from_memory_with_format(&served, ImageFormat::Png).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (512, 384));

    // Revalidation costs no body.
    let (status, headers, bytes) = fetch(&gw, &client, &user.id, Some(&etag)).await;
    assert_eq!(status, 304);
    assert!(bytes.is_empty());
    assert_eq!(headers["etag"], etag.as_str());
    let (status, _, _) = fetch(&gw, &client, &user.id, Some("\"stale\"")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jpeg_loses_its_exif_and_comment_but_keeps_its_orientation() {
    let gw = TestGateway::start().await;
    let (_, user, client, csrf) = gw.admin_session().await;
    let sent = jpeg_with_exif_and_comment(64, 32);
    assert!(contains(&sent, b"GPS-SECRET") && contains(&sent, b"COMMENT-SECRET"));
    let (status, body) = upload(&gw, &client, &csrf, "image/jpeg", sent.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (_, headers, served) = fetch(&gw, &client, &user.id, None).await;
    assert_eq!(headers["content-type"], "image/png");
    assert_ne!(served, sent);
    for secret in [&b"GPS-SECRET"[..], b"COMMENT-SECRET", b"Exif"] {
        assert!(
            !contains(&served, secret),
            "{}",
            String::from_utf8_lossy(secret)
        );
    }
    let decoded = image::load_from_memory(&served).unwrap();
    assert_eq!(
        (decoded.width(), decoded.height()),
        (32, 64),
        "turned upright by its EXIF orientation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webp_is_accepted_and_the_bytes_decide_the_format() {
    let gw = TestGateway::start().await;
    let (_, user, client, csrf) = gw.admin_session().await;
    let webp = encode(
        DynamicImage::ImageRgba8(RgbaImage::from_pixel(20, 10, Rgba([1, 2, 3, 128]))),
        ImageFormat::WebP,
    );
    let (status, body) = upload(&gw, &client, &csrf, "image/webp", webp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["width"].as_u64(), body["height"].as_u64()),
        (Some(20), Some(10))
    );
    // A PNG labelled as JPEG is still a PNG: allowed types, decoded by what it is.
    let (status, body) = upload(&gw, &client, &csrf, "image/jpeg", gradient_png(30, 30)).await;
    assert_eq!(status, 200, "{body}");
    let (_, _, served) = fetch(&gw, &client, &user.id, None).await;
    assert_eq!(image::load_from_memory(&served).unwrap().width(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_types_are_415_and_undecodable_images_400() {
    let gw = TestGateway::start().await;
    let (_, _, client, csrf) = gw.admin_session().await;
    let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;".to_vec();
    let svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>".to_vec();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("image/gif", gif.clone(), 415, "unsupported_media_type"),
        ("image/png", gif, 415, "unsupported_media_type"),
        ("image/png", svg.clone(), 415, "unsupported_media_type"),
        ("image/svg+xml", svg, 415, "unsupported_media_type"),
        (
            "text/plain",
            gradient_png(4, 4),
            415,
            "unsupported_media_type",
        ),
        (
            "application/octet-stream",
            gradient_png(4, 4),
            415,
            "unsupported_media_type",
        ),
        (
            "image/png",
            gradient_png(64, 64)[..60].to_vec(),
            400,
            "invalid_image",
        ),
        (
            "image/jpeg",
            vec![0xff, 0xd8, 0xff, 0xe0, 0, 0, 1, 2, 3],
            400,
            "invalid_image",
        ),
        ("image/png", Vec::new(), 400, "invalid_image"),
    ];
    for (content_type, body, status, code) in cases {
        let (got, err) = upload(&gw, &client, &csrf, content_type, body).await;
        assert_eq!(
            (got, err["error"].as_str()),
            (status, Some(code)),
            "{content_type}: {err}"
        );
    }
    // The type check names what to send.
    let (_, err) = upload(&gw, &client, &csrf, "text/plain", gradient_png(4, 4)).await;
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("PNG, JPEG or WebP"));
    // Nothing was stored by any of these.
    let (status, _, _) = fetch(&gw, &client, "usr_none", None).await;
    assert_eq!(status, 404);
}

/// Sends a chunked PUT (no Content-Length) with the session cookie and CSRF token over a raw
/// connection; returns the status.
async fn raw_chunked_put(gw: &TestGateway, cookie: &str, csrf: &str, body: &[u8]) -> u16 {
    let addr = gw.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {MINE} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nX-CSRF-Token: {csrf}\r\n\
         Content-Type: image/png\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(64 * 1024) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        if conn.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_up_to_2_mib_pass_and_larger_are_413_on_both_layers() {
    let gw = TestGateway::start().await;
    let org = gw.create_org("Acme").await;
    gw.create_user(&org, "admin@acme.test", true).await;
    let (client, jar) = gw.client_with_jar();
    let login = gw.login(&client, "admin@acme.test").await;
    let csrf = login["csrf_token"].as_str().unwrap().to_string();

    // Well above the 64 KiB of other routes, below 2 MiB: accepted and shrunk.
    let big = noise_png(800, 800);
    assert!(
        big.len() > 3 * MIB / 2 && big.len() < 2 * MIB,
        "{}",
        big.len()
    );
    let (status, body) = upload(&gw, &client, &csrf, "image/png", big).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["width"], 512);

    // One byte over: refused by the gateway from Content-Length, before it is forwarded...
    let mut over = gradient_png(8, 8);
    over.resize(2 * MIB + 1, 0);
    let (status, err) = upload(&gw, &client, &csrf, "image/png", over.clone()).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (413, Some("body_too_large"))
    );
    assert_eq!(err["message"], "Request bodies are limited to 2 MiB.");
    // ... and by the account app when the body is chunked.
    use reqwest::cookie::CookieStore;
    let cookie = jar.cookies(&gw.url("/").parse().unwrap()).unwrap();
    let cookie = cookie.to_str().unwrap();
    assert_eq!(raw_chunked_put(&gw, cookie, &csrf, &over).await, 413);
    assert_eq!(
        raw_chunked_put(&gw, cookie, &csrf, &gradient_png(8, 8)).await,
        200
    );

    // Other routes keep the 64 KiB limit.
    let (status, err) = send(
        &gw,
        &client,
        Method::PATCH,
        "/auth/api/v1/me",
        &csrf,
        Some(serde_json::json!({ "job_title": "x".repeat(70 * 1024) })),
    )
    .await;
    assert_eq!(
        (status, err["message"].as_str()),
        (413, Some("Request bodies are limited to 64 KiB."))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_signed_in_user_sees_an_avatar_and_its_owner_deletes_it() {
    let gw = TestGateway::start().await;
    let (_, user, client, csrf) = gw.admin_session().await;
    let (status, _) = upload(&gw, &client, &csrf, "image/png", gradient_png(10, 10)).await;
    assert_eq!(status, 200);
    // Someone of another organization.
    let other_org = gw.create_org("Other").await;
    gw.create_user(&other_org, "stranger@other.test", false)
        .await;
    let stranger = gw.client();
    gw.login(&stranger, "stranger@other.test").await;
    let (status, _, bytes) = fetch(&gw, &stranger, &user.id, None).await;
    assert_eq!(status, 200);
    assert!(!bytes.is_empty());
    // Nobody signed in.
    let (status, _, _) = fetch(&gw, &gw.client(), &user.id, None).await;
    assert_eq!(status, 401);

    // Deleting needs the CSRF token, then the avatar is gone.
    let resp = client.delete(gw.url(MINE)).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let (status, _) = send(&gw, &client, Method::DELETE, MINE, &csrf, None).await;
    assert_eq!(status, 204);
    let (status, _, _) = fetch(&gw, &stranger, &user.id, None).await;
    assert_eq!(status, 404);
    let (status, _) = send(&gw, &client, Method::DELETE, MINE, &csrf, None).await;
    assert_eq!(status, 204, "deleting twice is harmless");
}
