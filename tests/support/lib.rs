// SPDX-License-Identifier: GPL-2.0

//! Support for the host tests: independent models and leak accounting.

pub mod config;
pub mod leak;
pub mod model;
pub mod ops;
pub mod pages;
