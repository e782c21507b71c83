//! Helpers shared by the integration tests: start the real mocks in-process on loopback and
//! talk to them over HTTP, as the daemon does.
#![allow(dead_code)]

use std::time::Duration;

use dvc_sync::mock::{
    MockServer,
    national::{self, Faults, MockAuth, NationalConfig},
    provincial::{self, Knobs, ProvincialConfig},
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const MADONVI: &str = "000.00.00.H58";

pub async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind loopback")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client")
}

/// A national mock and a client logged in to it.
pub struct National {
    pub server: MockServer,
    pub http: reqwest::Client,
    pub session: String,
}

impl National {
    pub async fn start(faults: Faults) -> National {
        dvc_sync::telemetry::init_for_tests();
        let config = NationalConfig { faults, ..NationalConfig::default() };
        let server = national::start(loopback().await, config).await.expect("start national mock");
        let mut n = National { server, http: client(), session: String::new() };
        n.session = n.login().await;
        n
    }

    /// A national mock with the account `madonvi` and the merger's `predecessors`.
    pub async fn start_unit(faults: Faults, madonvi: &str, predecessors: &[&str]) -> National {
        dvc_sync::telemetry::init_for_tests();
        let config = NationalConfig {
            faults,
            madonvi: madonvi.into(),
            predecessors: predecessors.iter().map(|p| (*p).to_owned()).collect(),
            ..NationalConfig::default()
        };
        let server = national::start(loopback().await, config).await.expect("start national mock");
        let mut n = National { server, http: client(), session: String::new() };
        n.session = n.login().await;
        n
    }

    /// A national mock behind an OAuth2 gateway (`--auth oauth2`; the client id and secret are
    /// the default account's), with no session.
    pub async fn start_gateway(faults: Faults) -> National {
        dvc_sync::telemetry::init_for_tests();
        let config = NationalConfig { faults, auth: MockAuth::OAuth2, ..NationalConfig::default() };
        let server = national::start(loopback().await, config).await.expect("start national mock");
        National { server, http: client(), session: String::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    pub async fn login(&self) -> String {
        let answer =
            self.post_raw("/auth", json!({"username": "dvc-sync", "password": "dvc-sync-secret"})).await;
        assert_eq!(code_of(&answer), 0, "{answer}");
        answer["session"].as_str().expect("session").to_owned()
    }

    pub async fn post_raw(&self, path: &str, body: Value) -> Value {
        let response = self.http.post(self.url(path)).json(&body).send().await.expect("send");
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.expect("json answer")
    }

    /// An integration call with this client's session and unit.
    pub async fn call(&self, service: &str, extra: Value) -> Value {
        let mut body = json!({"session": self.session, "madonvi": MADONVI, "service": service});
        for (k, v) in extra.as_object().expect("object").clone() {
            body[k] = v;
        }
        self.post_raw("/integration", body).await
    }

    pub async fn create(&self, dossiers: Vec<Value>) -> Value {
        self.call("DongBoHoSoMC", json!({"isUpdating": "False", "data": dossiers})).await
    }

    pub async fn update(&self, dossiers: Vec<Value>) -> Value {
        self.call("DongBoHoSoMC", json!({"isUpdating": "True", "data": dossiers})).await
    }

    pub async fn history(&self, entries: Vec<Value>) -> Value {
        self.call("CapNhatTienDoHoSoMC", json!({"data": entries})).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("send");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn stats(&self) -> Value {
        self.get("/_mock/stats").await.1
    }

    pub async fn put_faults(&self, patch: Value) -> reqwest::Response {
        self.http.put(self.url("/_mock/faults")).json(&patch).send().await.expect("send")
    }
}

/// error_code as an integer, whichever form it came in.
pub fn code_of(answer: &Value) -> i64 {
    match &answer["error_code"] {
        Value::Number(n) => n.as_i64().expect("integer code"),
        Value::String(s) => s.parse().expect("numeric code"),
        other => panic!("error_code missing or odd: {other}"),
    }
}

pub fn message_of(answer: &Value) -> &str {
    answer["message"].as_str().unwrap_or("")
}

/// A valid dossier of the simulated province.
pub fn dossier(mahoso: &str) -> Value {
    json!({
        "MaHoSo": mahoso,
        "MaTTHC": "1.001193",
        "TenTTHC": "Đăng ký khai sinh",
        "MaLinhVuc": "G09-TP09",
        "TenLinhVuc": "Hộ tịch",
        "KenhThucHien": "2",
        "LoaiDoiTuong": "1",
        "ChuHoSo": "Nguyễn Văn An",
        "SoGiayToChuHoSo": "079123456789",
        "Email": "",
        "SoDienThoai": "0912345678",
        "TrichYeuHoSo": "Đăng ký khai sinh cho con",
        "NgayTiepNhan": "20260301083000",
        "NgayHenTra": "20260305170000",
        "TrangThaiHoSo": "2",
        "NgayTra": "",
        "NgayKetThucXuLy": "",
        "HinhThuc": "0",
        "DonViXuLy": "Sở Tư pháp",
    })
}

pub fn with(mut value: Value, key: &str, v: Value) -> Value {
    value[key] = v;
    value
}

pub fn without(mut value: Value, key: &str) -> Value {
    value.as_object_mut().expect("object").remove(key);
    value
}

/// A valid history entry.
pub fn entry(mahoso: &str, at: &str, status: &str) -> Value {
    json!({
        "MaHoSo": mahoso,
        "NguoiXuLy": "Trần Văn Hậu",
        "ChucDanh": "Chuyên viên",
        "PhongBanXuLy": "Phòng Hành chính - Tư pháp",
        "ThoiDiemXuLy": at,
        "NoiDungXuLy": "Chuyển xử lý hồ sơ",
        "TrangThai": status,
        "NgayBatDau": at,
        "NgayKetThucTheoQuyDinh": "20260305170000",
    })
}

/// The nth valid MaHoSo of the province.
pub fn code(n: u32) -> String {
    format!("000.00.15.H58-260301-{n:04}")
}

/// `base` with the query pairs appended, URL-encoded.
pub fn with_query(base: &str, pairs: &[(&str, String)]) -> reqwest::Url {
    let mut url = reqwest::Url::parse(base).expect("url");
    url.query_pairs_mut().extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    url
}

/// A provincial mock.
pub struct Provincial {
    pub server: MockServer,
    pub http: reqwest::Client,
}

pub const API_KEY: &str = "provincial-secret-key";

impl Provincial {
    pub async fn start(knobs: Knobs) -> Provincial {
        dvc_sync::telemetry::init_for_tests();
        let config = ProvincialConfig { knobs, ..ProvincialConfig::default() };
        let server = provincial::start(loopback().await, config).await.expect("start provincial mock");
        Provincial { server, http: client() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// One listing page: (HTTP status, body text).
    pub async fn page_raw(&self, query: &[(&str, String)]) -> (u16, String) {
        let response = self
            .http
            .get(with_query(&self.url("/api/v1/dossiers"), query))
            .header("X-API-Key", API_KEY)
            .send()
            .await
            .expect("send");
        (response.status().as_u16(), response.text().await.expect("body"))
    }

    pub async fn page(&self, after: Option<(&str, &str)>, limit: usize) -> Value {
        let mut query = vec![("limit", limit.to_string())];
        if let Some((ts, id)) = after {
            query.push(("updated_after", ts.to_owned()));
            query.push(("after_id", id.to_owned()));
        }
        let (status, body) = self.page_raw(&query).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("page is JSON")
    }

    /// Every visible record, paging with `limit` from the beginning.
    pub async fn list_all(&self, limit: usize) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<(String, String)> = None;
        loop {
            let page = self.page(cursor.as_ref().map(|(t, i)| (t.as_str(), i.as_str())), limit).await;
            let items = page["items"].as_array().expect("items").clone();
            // Raw records may be anything; the cursor comes from the last one that has one.
            if let Some(last) = items.iter().rev().find(|i| i["updated_at"].is_string()) {
                cursor = Some((
                    last["updated_at"].as_str().unwrap_or_default().to_owned(),
                    last["MaHoSo"].as_str().unwrap_or("").to_owned(),
                ));
            }
            all.extend(items);
            if page["has_more"] != json!(true) {
                return all;
            }
        }
    }

    pub async fn truth(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![("limit", "5000".to_owned())];
            if let Some(a) = &after {
                query.push(("after", a.clone()));
            }
            let request = self.http.get(with_query(&self.url("/_mock/truth"), &query));
            let page: Value = request.send().await.expect("send").json().await.expect("json");
            let items = page["items"].as_array().expect("items").clone();
            after = items.last().map(|i| i["key"].as_str().expect("key").to_owned());
            all.extend(items);
            if page["has_more"] != json!(true) {
                return all;
            }
        }
    }

    pub async fn stats(&self) -> Value {
        self.http.get(self.url("/_mock/stats")).send().await.expect("send").json().await.expect("json")
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.http.post(self.url(path)).json(&body).send().await.expect("send").json().await.expect("json")
    }

    pub async fn put_faults(&self, patch: Value) -> reqwest::Response {
        self.http.put(self.url("/_mock/faults")).json(&patch).send().await.expect("send")
    }
}

/// The fields of a record that hold personal data, as the provincial side sends them.
pub const PERSONAL: [&str; 4] = ["ChuHoSo", "SoGiayToChuHoSo", "SoDienThoai", "Email"];

/// Every personal value of the truth, as text (numbers too: a messy source sends ID numbers
/// and phones as JSON numbers). Values too short to be told from other text are left out.
pub fn personal_values(truth: &[Value]) -> std::collections::BTreeSet<String> {
    fn walk(v: &Value, found: &mut std::collections::BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if PERSONAL.contains(&k.as_str()) {
                        let text = match v {
                            Value::String(s) => s.trim().to_owned(),
                            Value::Number(n) => n.to_string(),
                            _ => continue,
                        };
                        if text.chars().count() >= 6 {
                            found.insert(text);
                        }
                    } else {
                        walk(v, found);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, found)),
            _ => {}
        }
    }
    let mut found = std::collections::BTreeSet::new();
    truth.iter().for_each(|item| walk(item, &mut found));
    found
}

pub mod daemon;
pub mod dbserver;

pub mod tls;

/// A valid provincial record (national field names, local status, whole history).
pub fn provincial_record(mahoso: &str, status: &str, entries: usize) -> Value {
    let mut r = dossier(mahoso);
    let obj = r.as_object_mut().expect("object");
    obj.remove("TrangThaiHoSo");
    obj.insert("TrangThai".into(), json!(status));
    let history: Vec<Value> = (0..entries)
        .map(|i| {
            let mut e = entry(mahoso, &format!("202603011{i}0000"), "x");
            e["TrangThai"] = json!(if i == 0 { "new" } else { "processing" });
            e["NoiDungXuLy"] = json!(format!("Bước xử lý {}", i + 1));
            e
        })
        .collect();
    obj.insert("QuaTrinhXuLy".into(), Value::Array(history));
    r
}
