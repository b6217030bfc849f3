// SPDX-License-Identifier: GPL-2.0

//! `pr_*!` on the host.
//!
//! Messages are kept per thread (so a test can check that something was reported) and go to
//! standard error only when `UAT_LOG` is set in the environment.

use std::cell::RefCell;

const KEEP: usize = 256;

thread_local! {
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

#[doc(hidden)]
pub fn emit(level: &str, args: core::fmt::Arguments<'_>) {
    let line = format!("{level}: {args}");
    if std::env::var_os("UAT_LOG").is_some() {
        eprint!("{line}");
    }
    LOG.with(|log| {
        let mut log = log.borrow_mut();
        if log.len() == KEEP {
            log.remove(0);
        }
        log.push(line);
    });
}

/// Takes the messages this thread printed since the last call.
pub fn take_log() -> Vec<String> {
    LOG.with(|log| std::mem::take(&mut *log.borrow_mut()))
}

/// Prints an error-level message.
#[macro_export]
macro_rules! pr_err {
    ($($arg:tt)*) => { $crate::print::emit("err", format_args!($($arg)*)) };
}

/// Prints a warning-level message.
#[macro_export]
macro_rules! pr_warn {
    ($($arg:tt)*) => { $crate::print::emit("warn", format_args!($($arg)*)) };
}

/// Prints an info-level message.
#[macro_export]
macro_rules! pr_info {
    ($($arg:tt)*) => { $crate::print::emit("info", format_args!($($arg)*)) };
}

/// Prints a debug-level message.
#[macro_export]
macro_rules! pr_debug {
    ($($arg:tt)*) => { $crate::print::emit("debug", format_args!($($arg)*)) };
}
