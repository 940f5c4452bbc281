//! A small deterministic PRNG (SplitMix64), so `--seed` reproduces a fleet exactly: class
//! placement, generated passwords, host data, jitter and flaky-link draws. Not for
//! cryptography: TLS keys come from ring's system RNG.

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
/// OOPSLA 2014): one 64-bit state, full period, good enough for simulation draws.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

/// The SplitMix64 increment (the golden ratio in 64-bit fixed point).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// An independent generator for `stream` (a host index, a purpose tag), derived from
    /// this generator's seed without advancing it.
    pub fn fork(&self, stream: u64) -> Self {
        Self::new(mix(self.state ^ mix(stream.wrapping_add(GAMMA))))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// A uniform float in `[0, 1)` (53 random bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in `[0, n)`; 0 when `n` is 0. Lemire's multiply-shift: the bias is
    /// below 2^-32 for the small `n` used here.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p` (clamped to `[0, 1]`).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A password of `len` characters from upper and lower case letters, digits and a few
    /// symbols, with at least one of each class (Windows complexity rules).
    pub fn password(&mut self, len: usize) -> String {
        const CLASSES: [&[u8]; 4] = [
            b"ABCDEFGHJKLMNPQRSTUVWXYZ",
            b"abcdefghijkmnopqrstuvwxyz",
            b"23456789",
            b"-_.+!",
        ];
        let len = len.max(CLASSES.len());
        let mut out: Vec<u8> = Vec::with_capacity(len);
        for i in 0..len {
            let class = CLASSES[i % CLASSES.len()];
            let at = self.below(class.len() as u64) as usize;
            out.push(class.get(at).copied().unwrap_or(b'x'));
        }
        self.shuffle(&mut out);
        out.into_iter().map(char::from).collect()
    }
}

/// The SplitMix64 output function (a variant of MurmurHash3's finaliser).
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_splitmix64_outputs() {
        // Reference values of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        let mut rng = Rng::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn same_seed_same_stream_and_forks_differ() {
        let a: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let root = Rng::new(42);
        assert_ne!(root.fork(1).next_u64(), root.fork(2).next_u64());
        assert_eq!(root.fork(7).next_u64(), root.fork(7).next_u64());
    }

    #[test]
    fn ranges_and_probabilities() {
        let mut rng = Rng::new(9);
        let mut hits = 0;
        for _ in 0..10_000 {
            assert!(rng.below(7) < 7);
            let f = rng.next_f64();
            assert!((0.0..1.0).contains(&f));
            if rng.chance(0.25) {
                hits += 1;
            }
        }
        assert!((2_200..2_800).contains(&hits), "{hits}");
        assert_eq!(rng.below(0), 0);
        assert!(!rng.chance(0.0));
        assert!((0..100).all(|_| rng.chance(1.0)));
    }

    #[test]
    fn passwords_have_every_class() {
        let mut rng = Rng::new(3);
        for _ in 0..50 {
            let pw = rng.password(16);
            assert_eq!(pw.len(), 16);
            assert!(pw.chars().any(|c| c.is_ascii_uppercase()));
            assert!(pw.chars().any(|c| c.is_ascii_lowercase()));
            assert!(pw.chars().any(|c| c.is_ascii_digit()));
            assert!(pw.chars().any(|c| "-_.+!".contains(c)));
        }
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut items: Vec<u32> = (0..100).collect();
        Rng::new(5).shuffle(&mut items);
        let mut sorted = items.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(items, sorted);
    }
}
