#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle helper spins before it parks. Longer than the gaps between one token's
/// loops (tens of µs) and than sampling between tokens (~1 ms), so a decode never parks its
/// helpers; short enough that an idle process gives its cores back at once.
pub const SPIN_BUDGET: Duration = Duration::from_millis(5);

/// A loop body with its lifetime erased: valid while its loop runs (see [`Team::for_each`]).
type Job = *const (dyn Fn(usize) + Sync + 'static);

/// State shared by the caller and the helpers of one team.
struct Shared {
    /// Bumped once per loop; helpers wait for it to change.
    epoch: AtomicUsize,
    /// The current loop's body, written only while every helper is idle.
    job: UnsafeCell<Option<Job>>,
    /// Tasks of the current loop.
    n_tasks: AtomicUsize,
    /// Next task to hand out.
    next: AtomicUsize,
    /// Helpers that have not finished the current loop.
    busy_helpers: AtomicUsize,
    /// Helpers parked on `wake` (so the caller knows to notify).
    parked: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
    /// The first panic of a helper in the current loop, for the caller to resume.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `job` is written only by the one caller holding `Team::running` while every helper is
// idle, and read by helpers only between the epoch bump (release/acquire) and their decrement
// of `busy_helpers`, which the caller waits for before the job's closure goes out of scope.
// The closure itself is `Sync`, so calling it from several threads is sound.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is the only field that is not `Send` by itself.
unsafe impl Send for Shared {}

/// A fixed team of threads (the caller plus `threads − 1` helpers) that runs one parallel loop
/// at a time. See the crate documentation for why it exists beside rayon.
pub struct Team {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
    /// Set while a loop runs on the team.
    running: AtomicBool,
}

// A panicking task leaves the team as it was (the loop waits for every member and clears the
// job), so a team can be used again after catching the panic.
impl std::panic::UnwindSafe for Team {}
impl std::panic::RefUnwindSafe for Team {}

impl std::fmt::Debug for Team {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Team")
            .field("threads", &self.threads())
            .finish()
    }
}

impl Team {
    /// A team of `threads` members (at least 1): the thread calling [`Team::for_each`] and
    /// `threads − 1` helper threads started now.
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            n_tasks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            busy_helpers: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            panic: Mutex::new(None),
        });
        let helpers = (1..threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("nano-infer-team-{i}"))
                    .spawn(move || helper_loop(&shared))
                    .expect("spawning a team thread")
            })
            .collect();
        Team {
            shared,
            helpers,
            running: AtomicBool::new(false),
        }
    }

    /// The team for `threads` members, made on first use and kept for the process.
    pub fn shared(threads: usize) -> &'static Team {
        static TEAMS: OnceLock<Mutex<Vec<&'static Team>>> = OnceLock::new();
        let teams = TEAMS.get_or_init(|| Mutex::new(Vec::new()));
        let mut teams = teams.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(team) = teams.iter().find(|t| t.threads() == threads.max(1)) {
            return team;
        }
        let team: &'static Team = Box::leak(Box::new(Team::new(threads)));
        teams.push(team);
        team
    }

    /// The team sized like the rayon pool the caller runs in (the global pool outside one),
    /// so `--threads` and `ThreadPool::install` size both the same way.
    pub fn current() -> &'static Team {
        Team::shared(rayon::current_num_threads())
    }

    /// Members of the team, the caller included.
    pub fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Runs `f(i)` for every `i` in `0..n_tasks`, each once, on the team's members, and returns
    /// when all have finished. If another loop is running on the team, runs on rayon's pool.
    /// A panic in any task is resumed on the caller once every member has stopped.
    pub fn for_each(&self, n_tasks: usize, f: impl Fn(usize) + Sync) {
        if n_tasks == 0 {
            return;
        }
        if self.helpers.is_empty() || n_tasks == 1 {
            return (0..n_tasks).for_each(f);
        }
        if self
            .running
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            use rayon::prelude::*;
            return (0..n_tasks).into_par_iter().with_max_len(1).for_each(&f);
        }
        let _running = ClearOnDrop(&self.running);
        let s = &*self.shared;
        let f: &(dyn Fn(usize) + Sync) = &f;
        // SAFETY: erasing the lifetime is sound because no helper touches the job after this
        // call returns or unwinds: it waits (below, on both paths) until every helper has
        // decremented `busy_helpers`, which each does after its last use of the job. The
        // helpers are all idle now (the previous loop waited likewise), so none reads `job`
        // while it is written.
        unsafe {
            *s.job.get() = Some(std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f));
        }
        s.n_tasks.store(n_tasks, Ordering::Relaxed);
        s.next.store(0, Ordering::Relaxed);
        s.busy_helpers.store(self.helpers.len(), Ordering::Relaxed);
        // SeqCst pairs with a parking helper's SeqCst increment of `parked` and re-read of
        // `epoch`: either it sees the new epoch, or this load sees it parked and wakes it.
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.parked.load(Ordering::SeqCst) > 0 {
            let _lock = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.wake.notify_all();
        }
        let mine = panic::catch_unwind(AssertUnwindSafe(|| run_tasks(s, f, n_tasks)));
        let mut spins = 0u32;
        while s.busy_helpers.load(Ordering::Acquire) > 0 {
            spin_once(&mut spins);
        }
        // SAFETY: every helper is idle again; clearing leaves no dangling job behind.
        unsafe { *s.job.get() = None };
        if let Err(payload) = mine {
            panic::resume_unwind(payload);
        }
        let helper_panic = s
            .panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(payload) = helper_panic {
            panic::resume_unwind(payload);
        }
    }

    /// Splits `data` into chunks of `chunk_len` (the last may be shorter) and runs
    /// `f(chunk_index, chunk)` for each on the team, as [`Team::for_each`].
    pub fn for_each_chunk_mut<T: Send>(
        &self,
        data: &mut [T],
        chunk_len: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        assert!(chunk_len > 0, "for_each_chunk_mut: chunk_len must be > 0");
        let len = data.len();
        let base = SendPtr(data.as_mut_ptr());
        self.for_each(len.div_ceil(chunk_len), |i| {
            let start = i * chunk_len;
            let end = (start + chunk_len).min(len);
            // SAFETY: `for_each` runs each index once, so the ranges `start..end` handed out
            // are disjoint parts of `data`, which stays mutably borrowed until every task ends.
            let chunk =
                unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
            f(i, chunk)
        });
    }

    /// Splits `data` into consecutive segments of `segment_lens` (which must sum to its
    /// length), each segment into chunks of `chunk_len` (the last of a segment may be shorter),
    /// and runs `f(segment, chunk_index, chunk)` for every chunk on the team, as
    /// [`Team::for_each`]: the row blocks of several matmuls writing one concatenated output,
    /// in one loop.
    pub fn for_each_segment_chunk_mut<T: Send>(
        &self,
        data: &mut [T],
        segment_lens: &[usize],
        chunk_len: usize,
        f: impl Fn(usize, usize, &mut [T]) + Sync,
    ) {
        assert!(
            chunk_len > 0,
            "for_each_segment_chunk_mut: chunk_len must be > 0"
        );
        assert_eq!(
            segment_lens.iter().sum::<usize>(),
            data.len(),
            "for_each_segment_chunk_mut: the segments do not cover the data"
        );
        let n_tasks = segment_lens.iter().map(|l| l.div_ceil(chunk_len)).sum();
        let base = SendPtr(data.as_mut_ptr());
        self.for_each(n_tasks, |i| {
            // Task `i` is chunk `c` of segment `seg`, which starts at `offset` (few segments: scan).
            let (mut c, mut offset) = (i, 0);
            for (seg, &len) in segment_lens.iter().enumerate() {
                let chunks = len.div_ceil(chunk_len);
                if c < chunks {
                    let start = offset + c * chunk_len;
                    let end = offset + len.min((c + 1) * chunk_len);
                    // SAFETY: `for_each` runs each index once and distinct indices map to
                    // distinct chunks, disjoint parts of `data` (the segments tile it, checked
                    // above), which stays mutably borrowed until every task ends.
                    let chunk = unsafe {
                        std::slice::from_raw_parts_mut(base.get().add(start), end - start)
                    };
                    return f(seg, c, chunk);
                }
                c -= chunks;
                offset += len;
            }
            unreachable!("task {i} of {n_tasks} is inside the segments");
        });
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.stop.store(true, Ordering::SeqCst);
        {
            let _lock = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.wake.notify_all();
        }
        for helper in self.helpers.drain(..) {
            // A helper only ends by seeing `stop`; a join error would be its panic, already
            // handed to the caller of the loop it happened in.
            let _ = helper.join();
        }
    }
}

/// A raw pointer that may cross threads: [`Team::for_each_chunk_mut`] hands each thread a
/// disjoint part of the slice it points into.
struct SendPtr<T>(*mut T);
// SAFETY: only used to rebuild disjoint sub-slices of a `&mut [T]` with `T: Send`.
unsafe impl<T: Send> Sync for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not its field).
    fn get(&self) -> *mut T {
        self.0
    }
}

/// Clears the team's `running` flag when the loop ends, unwinding included.
struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Takes tasks from the shared counter until none are left.
fn run_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync), n_tasks: usize) {
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= n_tasks {
            break;
        }
        f(i);
    }
}

/// A helper thread: wait for a new epoch (spinning, then parked), run tasks, report done.
fn helper_loop(s: &Shared) {
    // Helpers start before the first loop, at epoch 0; reading the epoch here instead could
    // miss a loop published before this thread first ran, and that loop would wait forever.
    let mut seen = 0;
    loop {
        if !wait_for_epoch(s, &mut seen) {
            return;
        }
        // SAFETY: the caller wrote the job before bumping the epoch this thread just read
        // (acquire), and keeps it alive until this thread decrements `busy_helpers` below.
        let job = unsafe { (*s.job.get()).expect("a loop's job is set before its epoch") };
        let n_tasks = s.n_tasks.load(Ordering::Relaxed);
        // SAFETY: see above: the closure outlives this use.
        let f = unsafe { &*job };
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| run_tasks(s, f, n_tasks))) {
            let mut first = s.panic.lock().unwrap_or_else(PoisonError::into_inner);
            first.get_or_insert(payload);
        }
        s.busy_helpers.fetch_sub(1, Ordering::Release);
    }
}

/// One step of a spin-wait: a pause, and every 64th time a yield to the OS, so a member that
/// was descheduled (more threads than free cores) gets a core back from the one waiting for
/// it. Returns whether this step yielded, the waiter's cue to look at the clock (~20 ns).
fn spin_once(spins: &mut u32) -> bool {
    *spins = spins.wrapping_add(1);
    if spins.is_multiple_of(64) {
        std::thread::yield_now();
        true
    } else {
        std::hint::spin_loop();
        false
    }
}

/// Waits until the epoch differs from `seen` (and records it), or the team stops (`false`):
/// spinning for [`SPIN_BUDGET`], then parked until the caller notifies.
fn wait_for_epoch(s: &Shared, seen: &mut usize) -> bool {
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let epoch = s.epoch.load(Ordering::Acquire);
            if epoch != *seen {
                *seen = epoch;
                return true;
            }
            if s.stop.load(Ordering::Relaxed) {
                return false;
            }
            if spin_once(&mut spins) && start.elapsed() >= SPIN_BUDGET {
                break;
            }
        }
        let mut lock = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
        s.parked.fetch_add(1, Ordering::SeqCst);
        while s.epoch.load(Ordering::SeqCst) == *seen && !s.stop.load(Ordering::SeqCst) {
            lock = s.wake.wait(lock).unwrap_or_else(PoisonError::into_inner);
        }
        s.parked.fetch_sub(1, Ordering::SeqCst);
    }
}
