//! The scatter-gather core, sans-IO.

pub mod exchange;
pub mod health;
pub mod route;
pub mod select;
