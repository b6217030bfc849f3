// SPDX-License-Identifier: GPL-2.0

//! A mutex: the host twin of `rust/kernel/sync/lock.rs` and `rust/kernel/sync/lock/mutex.rs`
//! (Linux 7.3), over `std::sync::Mutex`.
//!
//! Same constructor ([`Mutex::new`] is a pin-initializer taking a name and a lock class, made
//! by [`new_mutex!`](crate::new_mutex)), same guard ([`MutexGuard`]: `Deref`, `DerefMut` for
//! `Unpin` data, [`MutexGuard::as_mut`]). `Mutex` and `MutexGuard` are plain types here, not
//! aliases of `Lock<T, MutexBackend>` / `Guard<'a, T, MutexBackend>`; lockdep classes are not
//! kept.

use core::{cell::UnsafeCell, ffi::CStr, ops::Deref, ops::DerefMut, pin::Pin};
use pin_init::PinInit;

/// A lockdep lock class key (host stand-in: nothing is recorded).
pub struct LockClassKey(());

impl LockClassKey {
    /// A key for a `static` (what [`static_lock_class!`](crate::static_lock_class) makes).
    #[doc(hidden)]
    pub const fn new_static() -> Self {
        LockClassKey(())
    }
}

/// Defines a static lock class and returns a pinned reference to it.
#[macro_export]
macro_rules! static_lock_class {
    () => {{
        static CLASS: $crate::sync::LockClassKey = $crate::sync::LockClassKey::new_static();
        ::core::pin::Pin::static_ref(&CLASS)
    }};
}

/// Returns the given string as a `&'static CStr`, or a name for the call site if none is given.
#[macro_export]
#[doc(hidden)]
macro_rules! optional_name {
    () => {
        c"host-lock"
    };
    ($name:literal) => {
        match ::core::ffi::CStr::from_bytes_with_nul(::core::concat!($name, "\0").as_bytes()) {
            Ok(name) => name,
            Err(_) => c"host-lock",
        }
    };
}

/// Creates a [`Mutex`] initialiser with the given name and a newly-created lock class.
#[macro_export]
macro_rules! new_mutex {
    ($inner:expr $(, $name:literal)? $(,)?) => {
        $crate::sync::Mutex::new(
            $inner, $crate::optional_name!($($name)?), $crate::static_lock_class!())
    };
}
pub use new_mutex;

/// A mutual exclusion primitive.
///
/// # Invariants
///
/// `data` is only accessed while `lock` is held, through a [`MutexGuard`]; it is structurally
/// pinned.
pub struct Mutex<T: ?Sized> {
    lock: std::sync::Mutex<()>,
    data: UnsafeCell<T>,
}

// SAFETY: `Mutex` can be transferred across thread boundaries iff the data it protects can.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}

// SAFETY: `Mutex` serialises the interior mutability it provides, so it is `Sync` as long as the
// data it protects is `Send`.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

impl<T> Mutex<T> {
    /// Constructs a new mutex.
    pub fn new(
        t: impl PinInit<T>,
        name: &'static CStr,
        key: Pin<&'static LockClassKey>,
    ) -> impl PinInit<Self> {
        let _ = (name, key);
        // SAFETY: The closure initializes both fields in place; `data` is never moved afterwards
        // (the caller pins the mutex).
        unsafe {
            pin_init::pin_init_from_closure(move |slot: *mut Self| {
                (&raw mut (*slot).lock).write(std::sync::Mutex::new(()));
                let Ok(()) = t.__pinned_init(UnsafeCell::raw_get(&raw const (*slot).data));
                Ok(())
            })
        }
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Acquires the lock and gives the caller access to the data protected by it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        MutexGuard {
            lock: self,
            _guard: guard,
        }
    }

    /// Tries to acquire the lock.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let guard = match self.lock.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(MutexGuard {
            lock: self,
            _guard: guard,
        })
    }
}

/// A lock guard: the lock is held while it lives.
///
/// # Invariants
///
/// `_guard` holds `lock.lock`.
pub struct MutexGuard<'a, T: ?Sized> {
    lock: &'a Mutex<T>,
    _guard: std::sync::MutexGuard<'a, ()>,
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// Returns the lock that this guard originates from.
    pub fn lock_ref(&self) -> &'a Mutex<T> {
        self.lock
    }

    /// Returns a pinned mutable reference to the protected data.
    pub fn as_mut(&mut self) -> Pin<&mut T> {
        // SAFETY: `self.lock.data` is structurally pinned, and we hold the lock.
        unsafe { Pin::new_unchecked(&mut *self.lock.data.get()) }
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: The caller owns the lock, so it is safe to deref the protected data.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized + Unpin> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: The caller owns the lock, so it is safe to deref the protected data.
        unsafe { &mut *self.lock.data.get() }
    }
}
