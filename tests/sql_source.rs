//! The SQL source against real servers: Debian's MariaDB and PostgreSQL, started by the tests
//! themselves, holding the OpenCPS v2 tables that the provincial simulator writes.

mod common;

use std::{collections::HashMap, sync::Arc, time::Duration};

use common::dbserver::{DbServer, Kind};
use dvc_sync::{
    config::{self, Purpose},
    domain::normalize::normalize,
    mock::{
        opencps::{DbKnobs, Province},
        provincial::Knobs,
    },
    provincial::SqlSource,
    sync::ports::{Cursor, Source},
};
use tokio_util::sync::CancellationToken;

fn sql_config(url: &str, overrides: &[(&str, &str)]) -> config::Config {
    let mut env: HashMap<String, String> = [
        ("DVC_SYNC__PROVINCIAL__KIND", "sql"),
        ("DVC_SYNC__PROVINCIAL__DATABASE_URL", url),
        ("DVC_SYNC__PROVINCIAL__PROFILE", "opencps-v2"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in overrides {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    config::from_values(env, Purpose::Source).expect("config")
}

async fn province(server: &DbServer, world: Knobs, db: DbKnobs) -> Arc<Province> {
    let admin = server.create_database("opencps");
    let p = Province::connect(&admin, world, db).await.expect("connect as admin");
    p.create_schema().await.expect("schema");
    p.grant_reader(common::dbserver::READER, common::dbserver::READER_PASSWORD, "opencps").await.expect("grant");
    Arc::new(p)
}

async fn read_everything(source: &SqlSource) -> Vec<serde_json::Value> {
    let mut cursor: Option<Cursor> = None;
    let mut all = Vec::new();
    loop {
        let page = source.page(cursor.as_ref(), 50).await.expect("page");
        all.extend(page.records.iter().map(|r| r.raw.clone()));
        let next = page.end.clone();
        if !page.has_more || next.is_none() {
            return all;
        }
        cursor = next;
    }
}

async fn profile_reads_what_the_province_wrote(kind: Kind) {
    let server = DbServer::start(kind);
    let p = province(
        &server,
        Knobs { dossiers: 60, changes_per_second: 400.0, seed: 3, ..Knobs::default() },
        DbKnobs { late_commit_rate: 0.0, ..DbKnobs::default() },
    )
    .await;
    let token = CancellationToken::new();
    let task = p.run(token.clone());
    while !p.settled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel();
    let _ = task.await;
    let config = sql_config(&server.reader_url("opencps"), &[]);
    let source = SqlSource::new(&config.provincial).expect("source");
    let records = read_everything(&source).await;
    let map = config.status_map.clone();
    let truth = p.truth();
    let mut compared = 0;
    for t in truth.iter().filter(|t| t.defect.is_none()) {
        let expected = normalize(&t.record, &map).expect("truth normalises");
        let got = records
            .iter()
            .rev()
            .find(|r| r["MaHoSo"] == t.record["MaHoSo"])
            .unwrap_or_else(|| panic!("{} not read", t.key));
        let got = normalize(got, &map).unwrap_or_else(|q| panic!("{}: {q:?}\n{got:#}", t.key));
        let mut e = expected.dossier.clone();
        let mut g = got.dossier.clone();
        for f in ["TenTTHC", "MaLinhVuc", "TenLinhVuc"] {
            e.remove(f);
            g.remove(f);
        }
        assert_eq!(g, e, "{}", t.key);
        assert_eq!(got.history, expected.history, "{}", t.key);
        compared += 1;
    }
    assert!(compared > 40, "{compared}");
    source.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_profile_reads_what_the_province_wrote() {
    profile_reads_what_the_province_wrote(Kind::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_profile_reads_what_the_province_wrote() {
    profile_reads_what_the_province_wrote(Kind::Postgres).await;
}
