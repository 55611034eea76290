//! SQLite's own page cache, minus one walk of it on every commit.
//!
//! When a B-tree page splits, SQLite renumbers the new pages into ascending order, swapping two
//! of them through a spare page number: the locking page, 1 GiB into the file, which no
//! database below 1 GiB has. The default cache remembers the highest page number it has ever
//! held. At the end of every write transaction the pager drops cached pages beyond the end of
//! the database, and because that remembered number now lies far beyond the end, the cache
//! walks every page it holds, looking for pages that no longer exist. On the call logger that
//! walk took 5 % of the server's samples, about 250 µs of writer time per commit by that share,
//! inside the time each caller waits for its 200 (`perf annotate pcache1TruncateUnsafe`: 96 %
//! on loading the next page header of the walk). On a machine whose sync dominates a commit the
//! calls per second did not move measurably; the CPU is what it saves.
//!
//! This wraps the default cache and forwards every call to it, but keeps its own, exact bound:
//! the highest page number it could hold apart from the spare one, and whether the spare one
//! is in use. A truncation that could not drop anything is not forwarded. Nothing else changes:
//! the same cache holds the same pages.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use rusqlite::ffi;

/// SQLite's `PENDING_BYTE`: the locking page begins here, and balance_nonroot uses its page
/// number as the spare.
const PENDING_BYTE: u32 = 0x4000_0000;

/// The default cache's methods, as SQLite had them before [`install`].
static INNER: OnceLock<Methods> = OnceLock::new();

struct Methods(ffi::sqlite3_pcache_methods2);

// SAFETY: the methods are plain function pointers and the default cache's `pArg` (null for
// SQLite's own cache), only ever passed back to SQLite's own functions, from any thread.
unsafe impl Send for Methods {}
unsafe impl Sync for Methods {}

/// One cache, one per connection and database.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// The spare page number for this page size.
    spare: c_uint,
    /// No page other than the spare one has a number above this.
    highest: c_uint,
    /// Whether a page may be cached under the spare number.
    spare_held: bool,
}

fn inner() -> &'static ffi::sqlite3_pcache_methods2 {
    // Set before SQLite can call any of the functions below.
    &INNER.get().expect("page cache installed").0
}

static INSTALLED: AtomicBool = AtomicBool::new(false);
static FORWARDED: AtomicU64 = AtomicU64::new(0);
static SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Truncations passed on to SQLite's cache, and truncations that could drop nothing and were
/// not, in this process so far.
pub fn truncations() -> (u64, u64) {
    (FORWARDED.load(Relaxed), SKIPPED.load(Relaxed))
}

/// Installs the wrapper, and says whether it is in place. It must run before the first
/// connection is opened (SQLite refuses the change afterwards); if it is too late it does
/// nothing, and SQLite keeps its default.
pub fn install() -> bool {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut methods = std::mem::MaybeUninit::<ffi::sqlite3_pcache_methods2>::zeroed();
        // SAFETY: GETPCACHE2 fills the struct it is given; PCACHE2 copies the one it is given.
        // Both are refused (SQLITE_MISUSE) once SQLite is initialised, and nothing is changed.
        unsafe {
            if ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, methods.as_mut_ptr())
                != ffi::SQLITE_OK
            {
                tracing::debug!("SQLite already initialised; its page cache is left as it is");
                return;
            }
            let _ = INNER.set(Methods(methods.assume_init()));
            let wrapper = ffi::sqlite3_pcache_methods2 {
                iVersion: 1,
                pArg: std::ptr::null_mut(),
                xInit: Some(x_init),
                xShutdown: Some(x_shutdown),
                xCreate: Some(x_create),
                xCachesize: Some(x_cachesize),
                xPagecount: Some(x_pagecount),
                xFetch: Some(x_fetch),
                xUnpin: Some(x_unpin),
                xRekey: Some(x_rekey),
                xTruncate: Some(x_truncate),
                xDestroy: Some(x_destroy),
                xShrink: Some(x_shrink),
            };
            if ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &wrapper) == ffi::SQLITE_OK {
                INSTALLED.store(true, Relaxed);
            } else {
                tracing::debug!("SQLite refused the page cache; it keeps its default");
            }
        }
    });
    INSTALLED.load(Relaxed)
}

/// # Safety
/// Every `x_*` below is called by SQLite with a cache that `x_create` made, and SQLite never
/// uses one cache from two threads at once.
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    unsafe { &mut *(p as *mut Cache) }
}

unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
    let m = inner();
    match m.xInit {
        Some(f) => unsafe { f(m.pArg) },
        None => ffi::SQLITE_OK,
    }
}

unsafe extern "C" fn x_shutdown(_: *mut c_void) {
    let m = inner();
    if let Some(f) = m.xShutdown {
        unsafe { f(m.pArg) }
    }
}

unsafe extern "C" fn x_create(
    page_size: c_int,
    extra: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    let inner_cache = unsafe { inner().xCreate.expect("xCreate")(page_size, extra, purgeable) };
    if inner_cache.is_null() {
        return inner_cache;
    }
    let cache = Box::new(Cache {
        inner: inner_cache,
        spare: PENDING_BYTE / page_size.max(1) as u32 + 1,
        highest: 0,
        spare_held: false,
    });
    Box::into_raw(cache) as *mut ffi::sqlite3_pcache
}

unsafe extern "C" fn x_cachesize(p: *mut ffi::sqlite3_pcache, n: c_int) {
    let c = unsafe { cache(p) };
    unsafe { inner().xCachesize.expect("xCachesize")(c.inner, n) }
}

unsafe extern "C" fn x_pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    let c = unsafe { cache(p) };
    unsafe { inner().xPagecount.expect("xPagecount")(c.inner) }
}

unsafe extern "C" fn x_fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    let c = unsafe { cache(p) };
    if create != 0 {
        // It may be created under any number, the spare one included (the pager refuses that
        // one straight after), so any number counts.
        c.highest = c.highest.max(key);
    }
    unsafe { inner().xFetch.expect("xFetch")(c.inner, key, create) }
}

unsafe extern "C" fn x_unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    let c = unsafe { cache(p) };
    unsafe { inner().xUnpin.expect("xUnpin")(c.inner, page, discard) }
}

unsafe extern "C" fn x_rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    let c = unsafe { cache(p) };
    // Numbers are unique in a cache: the page leaving the spare number was the one holding it.
    if old == c.spare {
        c.spare_held = false;
    }
    if new == c.spare {
        c.spare_held = true;
    } else {
        c.highest = c.highest.max(new);
    }
    unsafe { inner().xRekey.expect("xRekey")(c.inner, page, old, new) }
}

unsafe extern "C" fn x_truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    let c = unsafe { cache(p) };
    let spare_dropped = c.spare_held && c.spare >= limit;
    if c.highest < limit && !spare_dropped {
        SKIPPED.fetch_add(1, Relaxed);
        return; // no page numbered `limit` or above can be cached
    }
    FORWARDED.fetch_add(1, Relaxed);
    unsafe { inner().xTruncate.expect("xTruncate")(c.inner, limit) }
    c.highest = c.highest.min(limit.saturating_sub(1));
    if spare_dropped {
        c.spare_held = false;
    }
}

unsafe extern "C" fn x_destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: made by Box::into_raw in x_create; SQLite destroys each cache once.
    let c = unsafe { Box::from_raw(p as *mut Cache) };
    unsafe { inner().xDestroy.expect("xDestroy")(c.inner) }
}

unsafe extern "C" fn x_shrink(p: *mut ffi::sqlite3_pcache) {
    let c = unsafe { cache(p) };
    if let Some(f) = inner().xShrink {
        unsafe { f(c.inner) }
    }
}
