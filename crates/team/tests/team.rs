//! The team's contract: every task runs exactly once, on any team size, across many loops,
//! after its helpers have parked, with concurrent and nested callers, and through panics.

use nano_infer_team::{Team, SPIN_BUDGET};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// Runs a loop of `n` tasks and asserts each index ran exactly once.
fn assert_each_once(team: &Team, n: usize) {
    let counts: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
    team.for_each(n, |i| {
        counts[i].fetch_add(1, Ordering::Relaxed);
    });
    for (i, c) in counts.iter().enumerate() {
        assert_eq!(c.load(Ordering::Relaxed), 1, "task {i} of {n}");
    }
}

#[test]
fn every_task_runs_once_for_any_size() {
    for threads in 1..=4 {
        let team = Team::new(threads);
        assert_eq!(team.threads(), threads);
        for n in [0, 1, 2, 3, 7, 64, 1000] {
            assert_each_once(&team, n);
        }
    }
}

/// Thousands of back-to-back loops: the epoch hand-over between caller and helpers.
#[test]
fn back_to_back_loops() {
    let team = Team::new(3);
    for round in 0..5000 {
        assert_each_once(&team, 1 + round % 17);
    }
}

#[test]
fn chunks_cover_the_slice_in_order() {
    let team = Team::new(2);
    for (len, chunk) in [(0, 4), (1, 4), (100, 7), (128, 64), (1000, 1)] {
        let mut data = vec![usize::MAX; len];
        team.for_each_chunk_mut(&mut data, chunk, |ci, part| {
            assert!(part.len() <= chunk && !part.is_empty());
            for (j, d) in part.iter_mut().enumerate() {
                *d = ci * chunk + j;
            }
        });
        assert!(
            data.iter().enumerate().all(|(i, &d)| d == i),
            "{len} by {chunk}"
        );
    }
}

/// Every chunk of every segment once, with its segment, index and extent (segments of zero
/// length, shorter than a chunk, and exact multiples of it).
#[test]
fn segment_chunks_tile_the_slice() {
    let team = Team::new(3);
    for (segments, chunk) in [
        (vec![4096, 1024, 1024], 64),
        (vec![5, 0, 7], 4),
        (vec![0], 3),
        (vec![1, 1, 1, 1], 8),
        (vec![130], 64),
    ] {
        let len: usize = segments.iter().sum();
        // Each element records (segment, offset within the segment), written by its chunk.
        let mut data = vec![(usize::MAX, usize::MAX); len];
        team.for_each_segment_chunk_mut(&mut data, &segments, chunk, |seg, ci, part| {
            assert!(!part.is_empty() && part.len() <= chunk);
            for (j, d) in part.iter_mut().enumerate() {
                assert_eq!(d.0, usize::MAX, "element written twice");
                *d = (seg, ci * chunk + j);
            }
        });
        let want: Vec<(usize, usize)> = segments
            .iter()
            .enumerate()
            .flat_map(|(seg, &l)| (0..l).map(move |j| (seg, j)))
            .collect();
        assert_eq!(data, want, "{segments:?} by {chunk}");
    }
}

#[test]
#[should_panic(expected = "do not cover")]
fn segments_must_cover_the_slice() {
    let mut data = [0u8; 10];
    Team::new(2).for_each_segment_chunk_mut(&mut data, &[4, 4], 2, |_, _, _| {});
}

/// Helpers park after `SPIN_BUDGET`; the next loop must wake them (a lost wake-up would hang
/// the caller, which waits for every helper).
#[test]
fn parked_helpers_wake_up() {
    let team = Team::new(4);
    for _ in 0..3 {
        thread::sleep(SPIN_BUDGET * 3);
        assert_each_once(&team, 100);
    }
}

/// A loop started while one runs (here from inside a task) goes to rayon instead of waiting.
#[test]
fn nested_loops_complete() {
    let team = Team::new(2);
    let total = AtomicUsize::new(0);
    team.for_each(8, |_| {
        team.for_each(10, |_| {
            total.fetch_add(1, Ordering::Relaxed);
        });
    });
    assert_eq!(total.load(Ordering::Relaxed), 80);
}

#[test]
fn concurrent_callers_share_one_team() {
    let team = Team::new(2);
    thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for n in 0..300 {
                    assert_each_once(&team, n % 40);
                }
            });
        }
    });
}

/// A panicking task reaches the caller after every member stopped, and the team still works.
#[test]
fn a_panic_reaches_the_caller() {
    let team = Team::new(3);
    for bad in [0, 5, 99] {
        let result = std::panic::catch_unwind(|| {
            team.for_each(100, |i| {
                if i == bad {
                    panic!("task {i} failed");
                }
            })
        });
        let payload = result.expect_err("the loop must panic");
        let message = payload
            .downcast_ref::<String>()
            .expect("a formatted message");
        assert_eq!(message, &format!("task {bad} failed"));
        assert_each_once(&team, 50);
    }
}

#[test]
fn shared_teams_are_made_once_per_size() {
    let a = Team::shared(3) as *const Team;
    assert_eq!(a, Team::shared(3) as *const Team);
    assert_eq!(Team::shared(0).threads(), 1);
    assert_eq!(Team::shared(2).threads(), 2);
    assert_each_once(Team::current(), 33);
}
