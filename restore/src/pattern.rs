//! `--include` paths: each component is a name or a shell pattern (`*`, `?`, `[a-z]`, `[!x]`,
//! `\` quoting the next character) matched against one name, so `/home/*/.ssh` selects every
//! user's `.ssh` and `*` never crosses a `/` (as restic's patterns and the shell's).

/// Whether `name` matches `pattern` (one component).
pub fn matches(pattern: &[u8], name: &[u8]) -> bool {
    if !is_pattern(pattern) {
        return pattern == name;
    }
    glob(pattern, name)
}

/// True when the component holds pattern characters (else it is compared as it is).
pub fn is_pattern(component: &[u8]) -> bool {
    component
        .iter()
        .any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
}

fn glob(p: &[u8], n: &[u8]) -> bool {
    // Iterative with one backtrack point for the last `*`: linear in practice, never
    // exponential on hostile patterns.
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some(b'?') => {
                pi += 1;
                ni += 1;
                continue;
            }
            Some(b'[') => {
                if let Some((ok, next)) = class(&p[pi..], n[ni]) {
                    if ok {
                        pi += next;
                        ni += 1;
                        continue;
                    }
                } else if n[ni] == b'[' {
                    // An unclosed `[` is a literal.
                    pi += 1;
                    ni += 1;
                    continue;
                }
            }
            Some(b'\\') if pi + 1 < p.len() && p[pi + 1] == n[ni] => {
                pi += 2;
                ni += 1;
                continue;
            }
            Some(&c) if c == n[ni] => {
                pi += 1;
                ni += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class at the start of `p` (`[...]`): (matched, length of the class),
/// or `None` when the class is not closed.
fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut found = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == b']' && !first {
            return Some((found != negate, i + 1));
        }
        first = false;
        let lo = p[i];
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            if (lo..=p[i + 2]).contains(&c) {
                found = true;
            }
            i += 3;
        } else {
            if lo == c {
                found = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_match_like_the_shell() {
        let m = |p: &str, n: &str| matches(p.as_bytes(), n.as_bytes());
        assert!(m("ssh", "ssh") && !m("ssh", "sshd"));
        assert!(m("*.conf", "resolv.conf") && !m("*.conf", "resolv.conf.bak"));
        assert!(m("*", "") && m("*", "anything"));
        assert!(m("f?le", "file") && !m("f?le", "fle"));
        assert!(m("[a-c]x", "bx") && !m("[a-c]x", "dx"));
        assert!(m("[!a-c]x", "dx") && !m("[!a-c]x", "ax"));
        assert!(m("[]]", "]"));
        assert!(m("a*b*c", "aXXbYYc") && !m("a*b*c", "aXXbYY"));
        assert!(m("\\*", "*") && !m("\\*", "x"));
        assert!(m("[unclosed", "[unclosed"));
        // No exponential blow-up on a hostile pattern.
        let long = "a".repeat(5000);
        assert!(!m("*a*a*a*a*a*a*a*b", &long));
    }
}
