//! Any HTTP status and body from the national portal: classification never panics, and a
//! success always carries a readable error_code of 0.
#![no_main]

use dvc_sync::{
    national::{Answer, classify, error_code},
    transport::RawResponse,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data.split_first() {
        Some((s, rest)) => (if *s < 128 { 200 } else { 300 + u16::from(*s) }, rest),
        None => (200, data),
    };
    let answer = classify(Ok(RawResponse {
        status,
        retry_after: None,
        content_type: None,
        body: body.to_vec().into(),
    }));
    if let Answer::Ok(v) = &answer {
        assert_eq!(error_code(&v["error_code"]), Some(0));
        assert_eq!(status, 200);
    }
});
