//! PostgreSQL for the tests: a fresh database per test on the server `AGENTRACK_TEST_PG_URL`
//! names (`scripts/test` starts a throwaway cluster and sets it). Without it the test fails with
//! a message saying how to get one — a PostgreSQL test is never skipped.

use std::time::Duration;

/// The admin URL of the test server.
pub fn admin_url() -> String {
    std::env::var("AGENTRACK_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "AGENTRACK_TEST_PG_URL is not set. Run the suite with scripts/test, which starts a throwaway \
             PostgreSQL cluster (Debian's package: apt-get install postgresql), or start one with \
             `scripts/pg-cluster start DIR` and export the URL it prints, or point the variable at a server \
             (e.g. postgres://postgres@127.0.0.1:5432/postgres)."
        )
    })
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(base, query)| (base, Some(query)));
    let authority_start = base.find("://").map_or(0, |at| at + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |at| authority_start + at);
    let authority = &base[..authority_end];
    match query {
        Some(query) => format!("{authority}/{database}?{query}"),
        None => format!("{authority}/{database}"),
    }
}

async fn admin() -> tokio_postgres::Client {
    connect(&admin_url()).await
}

/// A client of the database at `url` (its connection driven in the background).
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("cannot reach the test PostgreSQL at {url}: {error}"));
    tokio::spawn(connection);
    client
}

/// A fresh, empty database on the test server; returns its URL and name.
pub async fn fresh_database() -> (String, String) {
    fresh_database_on(&admin_url()).await
}

/// A fresh, empty database on the server at `admin_url`; returns its URL and name.
pub async fn fresh_database_on(admin_url: &str) -> (String, String) {
    let name = format!("agentrack_test_{}", uuid::Uuid::new_v4().simple());
    connect(admin_url)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    (with_database(admin_url, &name), name)
}

/// Drops a database made by [`fresh_database`] (from any context, blocking).
pub fn drop_database(name: &str) {
    drop_database_on(&admin_url(), name);
}

/// Drops a database made by [`fresh_database_on`] (from any context, blocking).
pub fn drop_database_on(admin_url: &str, name: &str) {
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    let admin_url = admin_url.to_owned();
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                connect(&admin_url).await.batch_execute(&sql).await
            })
            .await;
        });
    })
    .join();
}
