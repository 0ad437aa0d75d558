//! `metadata.generateName`: the prefix plus 5 random characters from Kubernetes' alphabet
//! (no vowels, no easily confused characters), as `k8s.io/apiserver`'s name generator does.

/// Kubernetes' `utilrand.String` alphabet.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Random suffix length.
const SUFFIX_LEN: usize = 5;
/// Names are at most 63 characters; longer prefixes are cut to leave room for the suffix.
const MAX_GENERATED_NAME_LEN: usize = 63;

/// `prefix` (cut to 58 bytes at a character boundary) followed by 5 random characters.
pub fn generate_name(prefix: &str) -> String {
    let max_prefix = MAX_GENERATED_NAME_LEN - SUFFIX_LEN;
    let mut cut = prefix.len().min(max_prefix);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut name = String::with_capacity(cut + SUFFIX_LEN);
    name.push_str(&prefix[..cut]);
    // uuid v4 bytes come from the OS random generator; the modulo bias (256 % 27) is irrelevant
    // for collision avoidance.
    let random = uuid::Uuid::new_v4();
    for byte in random.as_bytes().iter().take(SUFFIX_LEN) {
        name.push(char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_plus_five_from_the_alphabet() {
        let name = generate_name("persistent-state-for-vm1-");
        let suffix = name.strip_prefix("persistent-state-for-vm1-").unwrap();
        assert_eq!(suffix.len(), 5);
        assert!(suffix.bytes().all(|b| ALPHABET.contains(&b)), "{name}");
        assert_ne!(generate_name("x-"), generate_name("x-"));
    }

    #[test]
    fn long_prefixes_are_cut() {
        let name = generate_name(&"a".repeat(100));
        assert_eq!(name.len(), 63);
    }
}
