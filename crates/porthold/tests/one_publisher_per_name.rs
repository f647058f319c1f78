//! Two processes that take the same instance name at the same moment: exactly
//! one wins, and the loser is told who won (pid and instance id), never a
//! generic failure.

mod common;

use std::io::Write;
use std::thread;

use common::{DIR, NAME, say};
use porthold::Error;
use porthold::discovery::{Publisher, State, lookup, new_instance_id};

const CONTENDER: &str = "contender_child";
const NAMES: usize = 10;
const ROUNDS_PER_NAME: usize = 10;

#[test]
fn contender_child() {
    if common::role().as_deref() != Some("contender") {
        return;
    }
    let dir = common::env_path(DIR);
    let name = common::env_str(NAME);
    let id = new_instance_id().unwrap();
    say(format!("armed {id}"));
    // Start line: both contenders block here until the parent says go.
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    match Publisher::acquire(&dir, &name, &id) {
        Ok(mut publisher) => {
            let mut record = common::record(&name, &id);
            record.state = State::Ready;
            publisher.publish(&record).unwrap();
            say(format!("won {} {id}", std::process::id()));
            common::wait_for_stdin_eof();
            publisher.finish().unwrap();
        }
        Err(Error::NameTaken {
            pid, instance_id, ..
        }) => {
            let pid = pid.map_or("-".to_string(), |p| p.to_string());
            say(format!(
                "lost {pid} {}",
                instance_id.unwrap_or_else(|| "-".into())
            ));
        }
        Err(e) => say(format!("error {e}")),
    }
}

fn one_round(dir: &std::path::Path, name: &str) {
    let (mut a, out_a) = common::spawn(common::child(CONTENDER, "contender", dir, name));
    let (mut b, out_b) = common::spawn(common::child(CONTENDER, "contender", dir, name));
    let id_a = out_a.next().strip_prefix("armed ").unwrap().to_string();
    let id_b = out_b.next().strip_prefix("armed ").unwrap().to_string();
    let mut in_a = a.stdin.take().unwrap();
    let mut in_b = b.stdin.take().unwrap();
    in_a.write_all(b"go\n").unwrap();
    in_b.write_all(b"go\n").unwrap();
    let line_a = out_a.next();
    let line_b = out_b.next();
    let (winner, winner_id, winner_in, loser_line, mut loser) =
        match (line_a.starts_with("won"), line_b.starts_with("won")) {
            (true, false) => (a, id_a, in_a, line_b, b),
            (false, true) => (b, id_b, in_b, line_a, a),
            _ => panic!("not exactly one winner for `{name}`: {line_a:?} / {line_b:?}"),
        };
    assert_eq!(
        loser_line,
        format!("lost {} {winner_id}", winner.id()),
        "the loser must name the winner's pid and instance id"
    );
    assert!(loser.wait().unwrap().success());
    // Exactly one record results, and it is the winner's.
    let live = lookup(dir, name)
        .unwrap()
        .expect("the winner's record is live");
    assert_eq!(live.record.instance_id, winner_id);
    assert_eq!(live.record.pid, winner.id());
    drop(winner_in);
    let mut winner = winner;
    assert!(winner.wait().unwrap().success());
    assert!(
        lookup(dir, name).unwrap().is_none(),
        "the winner's clean exit removes its record"
    );
}

#[test]
fn exactly_one_of_two_simultaneous_publishers_wins_and_the_loser_names_the_winner() {
    if common::role().is_some() {
        return;
    }
    let (_tmp, dir) = common::runtime_dir();
    // Names run in parallel (the loser's 200 ms retry dominates); rounds of
    // one name run in sequence, so each reuses the lock file of the last.
    let workers: Vec<_> = (0..NAMES)
        .map(|n| {
            let dir = dir.clone();
            thread::spawn(move || {
                for _ in 0..ROUNDS_PER_NAME {
                    one_round(&dir, &format!("same-{n}"));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    eprintln!(
        "{} rounds: one winner each, loser named the winner",
        NAMES * ROUNDS_PER_NAME
    );
}

#[test]
fn a_second_key_that_meets_a_taken_name_is_told_both_keys() {
    if common::role().is_some() {
        return;
    }
    use porthold::discovery::Key;
    use std::time::Duration;
    let (_tmp, dir) = common::runtime_dir();
    let first = Key {
        path: "/srv/a".into(),
        tag: "web".into(),
    };
    let second = Key {
        path: "/srv/b".into(),
        tag: "web".into(),
    };
    let id = new_instance_id().unwrap();
    // Before any record exists, the owner line alone names the holder's key.
    let holder = Publisher::acquire_for_key(&dir, "meeting", &id, &first, Duration::ZERO).unwrap();
    match Publisher::acquire_for_key(
        &dir,
        "meeting",
        &new_instance_id().unwrap(),
        &second,
        Duration::ZERO,
    ) {
        Err(err) => {
            let text = err.to_string();
            let Error::NameTaken {
                held_by, wanted, ..
            } = err
            else {
                panic!("expected NameTaken, got {err:?}");
            };
            assert_eq!(held_by.as_deref(), Some(&first));
            assert_eq!(wanted.as_deref(), Some(&second));
            assert!(
                text.contains("/srv/a (tag web)") && text.contains("/srv/b (tag web)"),
                "{text}"
            );
        }
        Ok(_) => panic!("the name was taken twice"),
    }
    drop(holder);
}

#[test]
fn each_owner_line_replaces_the_last_one_whole_even_a_longer_one() {
    if common::role().is_some() {
        return;
    }
    use porthold::discovery::Key;
    use std::time::Duration;
    let (_tmp, dir) = common::runtime_dir();
    let lock = dir.join("lines.lock");
    let long = Key {
        path: format!("/srv/{}", "a-long-project-path/".repeat(8)),
        tag: "web".into(),
    };
    let short = Key {
        path: "/srv/b".into(),
        tag: "web".into(),
    };
    let first = new_instance_id().unwrap();
    Publisher::acquire_for_key(&dir, "lines", &first, &long, Duration::ZERO)
        .unwrap()
        .finish()
        .unwrap();
    let left = std::fs::read_to_string(&lock).unwrap();
    assert!(
        left.contains(&first) && left.ends_with('\n'),
        "the ended owner's line stays: {left:?}"
    );
    let second = new_instance_id().unwrap();
    let holder =
        Publisher::acquire_for_key(&dir, "lines", &second, &short, Duration::ZERO).unwrap();
    let line = std::fs::read_to_string(&lock).unwrap();
    assert!(line.len() < left.len(), "{line:?} vs {left:?}");
    assert_eq!(
        line.matches('\n').count(),
        1,
        "one line, nothing after it: {line:?}"
    );
    assert!(
        line.contains(&second) && line.contains("/srv/b"),
        "{line:?}"
    );
    // A later loser names the live holder, not the ended one.
    match Publisher::acquire_for_key(
        &dir,
        "lines",
        &new_instance_id().unwrap(),
        &short,
        Duration::ZERO,
    ) {
        Err(Error::NameTaken { instance_id, .. }) => assert_eq!(instance_id, Some(second)),
        other => panic!("expected NameTaken, got {other:?}"),
    }
    drop(holder);
}
