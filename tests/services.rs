//! The test services of the shared store start, answer, restart and go away: a throwaway
//! PostgreSQL cluster and an S3-compatible server, as the catalog and object-store tests use
//! them.

mod common;

use std::time::Duration;

use artifactfs::objects::{ObjectClient, S3Client};
use bytes::Bytes;
use common::services::{Postgres, S3Server};

#[test]
fn postgres_answers_and_comes_back_after_a_restart() {
    let mut pg = Postgres::start();
    let url = pg.url();
    assert!(url.starts_with("postgres://postgres@127.0.0.1:"), "{url}");
    assert!(url.ends_with("/artifactfs"), "{url}");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    client
        .batch_execute("CREATE TABLE kept (n integer); INSERT INTO kept VALUES (42)")
        .unwrap();

    // A crash and a restart: the old connection is gone, the data is not.
    pg.restart();
    assert!(client.query_one("SELECT 1", &[]).is_err());
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let kept: i32 = client.query_one("SELECT n FROM kept", &[]).unwrap().get(0);
    assert_eq!(kept, 42);

    // Another database of the same cluster.
    let other = pg.create_database("second");
    let mut client = postgres::Client::connect(&other, postgres::NoTls).unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);

    // Stopped, it refuses connections; dropped, its directory is gone.
    pg.stop(true);
    assert!(postgres::Client::connect(&url, postgres::NoTls).is_err());
    pg.start_again();
    assert!(postgres::Client::connect(&url, postgres::NoTls).is_ok());
    let dir = pg.dir().to_path_buf();
    assert!(dir.join("data/PG_VERSION").exists());
    drop(pg);
    assert!(!dir.exists());
    assert!(postgres::Client::connect(&url, postgres::NoTls).is_err());
}

#[test]
fn s3_server_keeps_its_data_across_a_kill() {
    let mut server = S3Server::start();
    let url = server.bucket_url("harness");
    assert_eq!(url, "s3://harness/store");
    let mut config = server.config(&url);
    config.retry_for = Duration::from_secs(10);
    let client = S3Client::connect(&config).unwrap();
    client.put("hello", Bytes::from_static(b"world")).unwrap();
    assert_eq!(
        std::fs::read(server.object_file("harness", "store/hello")).unwrap(),
        b"world"
    );

    server.kill();
    assert!(!server.is_running());
    server.start_again();
    // The same client reaches it again, on the same port, with the same data.
    let got = client.get("hello", None).unwrap();
    assert_eq!(&got.data[..], b"world");
    assert!(
        server
            .env()
            .contains(&("AWS_ENDPOINT_URL", server.endpoint()))
    );
}
