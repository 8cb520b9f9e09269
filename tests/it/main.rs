//! Integration tests: the real gateway, a real redis-server, real HTTP.

mod bad_input;
mod harness;
mod login;
mod proxy;
mod redis_server;
mod replicas;
mod sessions;
mod sms;
mod store_conformance;
mod store_two_factor;
mod store_conformance_account;
mod tokens;
