//! Integration tests: the real gateway, a real redis-server, real HTTP.

mod harness;
mod proxy;
mod redis_server;
mod replicas;
mod sessions;
mod store_conformance;
