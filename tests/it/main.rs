//! Integration tests: the real gateway, a real redis-server, real HTTP.

mod audit;
mod avatar;
mod bad_input;
mod harness;
mod login;
mod members;
mod oauth;
mod oauth_fakes;
mod openapi;
mod password;
mod profile;
mod proxy;
mod redis_server;
mod replicas;
mod sessions;
mod sms;
mod store_conformance;
mod store_conformance_account;
mod store_identities;
mod store_two_factor;
mod tokens;
mod two_factor;
mod ui_pages;
