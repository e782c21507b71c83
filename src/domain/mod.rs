//! The vocabulary shared by the daemon and the mocks: national status codes and their rules,
//! the MaHoSo format, national dates, and text limits. Pure functions, no I/O.

pub mod dates;
pub mod mahoso;
pub mod status;
pub mod text;
