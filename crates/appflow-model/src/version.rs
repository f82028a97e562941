//! The newer version of a run: one rule, used wherever two versions of one run
//! meet (the pager's open-run tracking, the stage, the day-file merge).

/// Whether a version of a run with `last_updated_at` `later` supersedes one with
/// `earlier`, where the `later` version was read after the `earlier` one: the newest
/// `last_updated_at` wins (a missing one is the oldest), and on a tie the version read
/// last wins (AWS answers with its current version, so what was read last is at
/// least as new).
pub fn supersedes(later: Option<i64>, earlier: Option<i64>) -> bool {
    later >= earlier
}

#[cfg(test)]
mod tests {
    use super::supersedes;

    #[test]
    fn the_newest_update_wins_and_a_tie_goes_to_the_later_read() {
        assert!(supersedes(Some(2), Some(1)));
        assert!(!supersedes(Some(1), Some(2)));
        assert!(supersedes(Some(5), Some(5)), "a tie: the later read");
        assert!(
            supersedes(Some(0), None),
            "a missing update time is the oldest"
        );
        assert!(!supersedes(None, Some(i64::MIN)));
        assert!(supersedes(None, None));
    }
}
