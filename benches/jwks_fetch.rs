//! The HTTP client for JWKS fetches, measured before choosing it: reqwest
//! (hyper, Send futures) against awc (actix's client, !Send), each fetching
//! and parsing a two-key JWKS from a server on loopback.
//!   cargo bench --bench jwks_fetch

use std::hint::black_box;

use ably_tokend::upstream::jwks::KeySet;
use actix_web::{web, App, HttpResponse, HttpServer};
use criterion::{criterion_group, criterion_main, Criterion};

fn jwks_body() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut keys = Vec::new();
    for (name, kid) in [("rsa1", "a"), ("rsa2", "b")] {
        let mut jwk: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{dir}/{name}.jwk.json")).unwrap(),
        )
        .unwrap();
        jwk["kid"] = kid.into();
        keys.push(jwk);
    }
    serde_json::json!({ "keys": keys }).to_string()
}

fn fetch(c: &mut Criterion) {
    let body = jwks_body();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                let body = body.clone();
                App::new().route(
                    "/jwks.json",
                    web::get().to(move || {
                        let body = body.clone();
                        async move {
                            HttpResponse::Ok()
                                .content_type("application/json")
                                .body(body)
                        }
                    }),
                )
            })
            .workers(1)
            .disable_signals()
            .bind("127.0.0.1:0")
            .unwrap();
            tx.send(server.addrs()[0]).unwrap();
            server.run().await.unwrap();
        })
    });
    let addr = rx.recv().unwrap();
    let url = format!("http://{addr}/jwks.json");

    let system = actix_web::rt::System::new();
    let reqwest_client = reqwest::Client::new();
    c.bench_function("jwks_fetch/reqwest", |b| {
        b.iter(|| {
            system.block_on(async {
                let bytes = reqwest_client
                    .get(&url)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                black_box(KeySet::parse(&bytes).unwrap())
            })
        })
    });
    let awc_client = system.block_on(async { awc::Client::default() });
    c.bench_function("jwks_fetch/awc", |b| {
        b.iter(|| {
            system.block_on(async {
                let bytes = awc_client
                    .get(&url)
                    .send()
                    .await
                    .unwrap()
                    .body()
                    .await
                    .unwrap();
                black_box(KeySet::parse(&bytes).unwrap())
            })
        })
    });
}

criterion_group!(benches, fetch);
criterion_main!(benches);
