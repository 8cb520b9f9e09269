//! Avatars: `PUT /auth/api/v1/me/avatar` (PNG, JPEG or WebP, at most 2 MiB),
//! `GET /auth/api/v1/users/{id}/avatar` (any signed-in user), `DELETE /auth/api/v1/me/avatar`.
//!
//! Nothing a client uploads is served back as sent: the image is decoded (the bytes decide
//! the format, not the `Content-Type`), turned upright by its EXIF orientation, scaled down to
//! fit 512×512 and encoded afresh as PNG. Metadata (EXIF, comments, ICC profiles), trailing
//! bytes and anything else beside the pixels stay behind. Decoding is bounded (8192 pixels a
//! side, 256 MiB of memory), runs on the blocking pool, and at most `AVATAR_CONCURRENCY`
//! uploads are decoded at once.

use std::io::Cursor;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use image::imageops::FilterType;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::api::plausible_id;
use super::error::ApiError;
use super::extract::Caller;
use super::AppState;
use crate::store::Avatar;
use crate::web::AVATAR_BODY_BYTES;

/// The stored image fits in this square.
pub const MAX_SIDE: u32 = 512;
/// Larger sources are refused before their pixels are decoded.
const MAX_SOURCE_SIDE: u32 = 8192;
const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;
/// Browsers revalidate on every use (a cheap 304 thanks to the ETag), so a new avatar shows
/// at once; `private`: shared caches must not keep what needs a session to fetch.
const CACHE_CONTROL: &str = "private, no-cache";
const STORED_TYPE: &str = "image/png";
const UNSUPPORTED: &str =
    "Send a PNG, JPEG or WebP image (Content-Type image/png, image/jpeg or image/webp).";

#[derive(Debug, thiserror::Error)]
pub enum AvatarError {
    #[error("not a PNG, JPEG or WebP image")]
    UnsupportedType,
    #[error("the image cannot be decoded: {0}")]
    Undecodable(String),
    #[error("the image is larger than {MAX_SOURCE_SIDE} pixels on a side")]
    TooLarge,
    #[error("cannot encode the image: {0}")]
    Encode(String),
}

/// The format by the file's own signature; `None` for anything but PNG, JPEG and WebP.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(ImageFormat::WebP)
    } else {
        None
    }
}

fn decode_error(e: ImageError) -> AvatarError {
    match e {
        ImageError::Limits(_) => AvatarError::TooLarge,
        other => AvatarError::Undecodable(other.to_string()),
    }
}

/// A freshly encoded PNG of the image, upright and at most `MAX_SIDE` on a side.
pub fn reencode(bytes: &[u8]) -> Result<(Vec<u8>, u32, u32), AvatarError> {
    let format = sniff(bytes).ok_or(AvatarError::UnsupportedType)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SOURCE_SIDE);
    limits.max_image_height = Some(MAX_SOURCE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    // A broken EXIF block is no reason to refuse the pixels.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    img.apply_orientation(orientation);
    if img.width() > MAX_SIDE || img.height() > MAX_SIDE {
        // Keeps the aspect ratio: the result fits the square.
        img = img.resize(MAX_SIDE, MAX_SIDE, FilterType::CatmullRom);
    }
    // 8 bits per channel is all a browser shows; alpha only if the source had it.
    let img = if img.color().has_alpha() {
        DynamicImage::ImageRgba8(img.to_rgba8())
    } else {
        DynamicImage::ImageRgb8(img.to_rgb8())
    };
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .map_err(|e| AvatarError::Encode(e.to_string()))?;
    Ok((out.into_inner(), img.width(), img.height()))
}

fn etag_of(data: &[u8]) -> String {
    hex::encode(&Sha256::digest(data)[..16])
}

fn avatar_url(user_id: &str) -> String {
    format!("/auth/api/v1/users/{user_id}/avatar")
}

/// The declared type must be one we take (parameters aside); the bytes are checked after.
fn declared_type_ok(headers: &HeaderMap) -> bool {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    matches!(
        declared.as_deref(),
        Some("image/png" | "image/jpeg" | "image/webp")
    )
}

/// `PUT /auth/api/v1/me/avatar` -> 200 `{"avatar_url","content_type","width","height","etag"}`.
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: AVATAR_BODY_BYTES,
        },
        _ => ApiError::bad_request("unreadable_body", e.body_text()),
    })?;
    if !declared_type_ok(&headers) {
        return Err(ApiError::UnsupportedMediaType {
            message: UNSUPPORTED,
        });
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("invalid_image", "The body is empty."));
    }
    let permit = state
        .avatar_permits
        .clone()
        .acquire_owned()
        .await
        .map_err(ApiError::internal)?;
    let processed = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        reencode(&body)
    })
    .await
    .map_err(ApiError::internal)?;
    let (data, width, height) = match processed {
        Ok(done) => done,
        Err(AvatarError::UnsupportedType) => {
            return Err(ApiError::UnsupportedMediaType {
                message: UNSUPPORTED,
            })
        }
        Err(AvatarError::TooLarge) => {
            return Err(ApiError::bad_request(
                "image_too_large",
                "The image is larger than 8192 pixels on a side.",
            ))
        }
        Err(AvatarError::Undecodable(cause)) => {
            tracing::debug!(%cause, "undecodable avatar");
            return Err(ApiError::bad_request(
                "invalid_image",
                "The image cannot be decoded.",
            ));
        }
        Err(e @ AvatarError::Encode(_)) => return Err(ApiError::internal(e)),
    };
    let avatar = Avatar {
        content_type: STORED_TYPE.to_string(),
        etag: etag_of(&data),
        data,
        updated_at: state.clock.now(),
    };
    state.store.put_avatar(&caller.user.id, &avatar).await?;
    Ok(Json(json!({
        "avatar_url": avatar_url(&caller.user.id),
        "content_type": avatar.content_type,
        "width": width,
        "height": height,
        "etag": avatar.etag,
    }))
    .into_response())
}

/// `DELETE /auth/api/v1/me/avatar` -> 204 (also when there was none).
pub async fn remove(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    state.store.delete_avatar(&caller.user.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /auth/api/v1/users/{user_id}/avatar`: the image with its type, `ETag` and
/// `Cache-Control`; 304 for a matching `If-None-Match`; 404 when the user has none.
pub async fn serve(
    State(state): State<AppState>,
    _caller: Caller,
    Path(user_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !plausible_id(&user_id) {
        return Err(ApiError::NotFound);
    }
    let avatar = state
        .store
        .get_avatar(&user_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let etag = format!("\"{}\"", avatar.etag);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, avatar.data).into_response()
    };
    let h = resp.headers_mut();
    if !matches {
        let content_type = HeaderValue::from_str(&avatar.content_type)
            .unwrap_or(HeaderValue::from_static(STORED_TYPE));
        h.insert(header::CONTENT_TYPE, content_type);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbaImage::from_fn(w, h, |x, y| Rgba([x as u8, y as u8, 7, 200]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn sniffing_looks_at_the_bytes() {
        assert_eq!(sniff(&png(2, 2)), Some(ImageFormat::Png));
        assert_eq!(sniff(&[0xff, 0xd8, 0xff, 0xe0]), Some(ImageFormat::Jpeg));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(ImageFormat::WebP));
        assert_eq!(sniff(b"GIF89a......"), None);
        assert_eq!(sniff(b"<svg xmlns="), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn large_images_shrink_to_fit_and_small_ones_keep_their_size() {
        let (out, w, h) = reencode(&png(1024, 600)).unwrap();
        assert_eq!((w, h), (512, 300));
        assert_eq!(sniff(&out), Some(ImageFormat::Png));
        let (_, w, h) = reencode(&png(40, 30)).unwrap();
        assert_eq!((w, h), (40, 30));
    }

    #[test]
    fn trailing_bytes_are_not_carried_over() {
        let mut file = png(16, 16);
        file.extend_from_slice(b"<script>alert(1)</script>");
        let (out, _, _) = reencode(&file).unwrap();
        assert!(!out.windows(8).any(|w| w == b"<script>"));
    }

    #[test]
    fn garbage_and_other_formats_are_refused() {
        let mut broken = png(16, 16);
        broken.truncate(40);
        assert!(matches!(
            reencode(&broken),
            Err(AvatarError::Undecodable(_))
        ));
        assert!(matches!(
            reencode(b"GIF89a\x01\x00\x01\x00"),
            Err(AvatarError::UnsupportedType)
        ));
        let jpeg = {
            let img = RgbImage::from_pixel(8, 8, Rgb([1, 2, 3]));
            let mut out = Cursor::new(Vec::new());
            img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
            out.into_inner()
        };
        let (out, w, h) = reencode(&jpeg).unwrap();
        assert_eq!((w, h), (8, 8));
        assert_eq!(sniff(&out), Some(ImageFormat::Png));
    }
}
