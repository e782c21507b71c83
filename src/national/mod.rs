//! The national portal (DVCQG) adapter: the session, the integration envelope, and the one
//! function that classifies every answer.

pub(crate) mod classify;
pub(crate) mod client;

pub use classify::{Answer, Transient, TransientKind, classify, error_code};
pub use client::{
    Credentials, Granted, HttpNational, HttpTransport, NationalClient, Target, Transport, token_answer,
};
