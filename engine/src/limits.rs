//! Process limits a fleet run needs: one TCP socket per host in flight (`forks` working plus
//! `connecting` waiting on a SYN), and a few files for the state store. The usual soft
//! limit of 1,024 descriptors is below what `--forks 1000` needs, so a run raises it towards
//! the hard limit first rather than fail hosts with EMFILE as if they were unreachable.

/// Raises the soft RLIMIT_NOFILE towards the hard limit when `needed` is above it;
/// returns the soft limit in effect.
#[allow(unsafe_code)]
pub fn raise_descriptor_limit(needed: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    let current = limit.rlim_cur;
    if current >= needed || current >= limit.rlim_max {
        return current;
    }
    let wanted = libc::rlimit {
        rlim_cur: limit.rlim_max.min(needed.max(current)),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads one rlimit we own; raising the soft limit up to the hard
    // limit is always permitted.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
        wanted.rlim_cur
    } else {
        current
    }
}

#[cfg(test)]
mod tests {
    use super::raise_descriptor_limit;

    #[test]
    fn the_limit_is_raised_to_what_is_needed_or_stays_above_it() {
        let now = raise_descriptor_limit(0);
        assert!(now >= 1, "{now}");
        // Never lowered; raised to at least 100 (every system's hard limit is higher).
        assert!(raise_descriptor_limit(100) >= now.min(100));
        assert!(raise_descriptor_limit(100) >= 100);
    }
}
