//! The one redaction rule for everything drbuild prints (logs, tables, `--json`, error
//! messages, doctor hints):
//!
//! - the password of a URL's userinfo becomes `***` (`http://alice:***@proxy:3128`); a
//!   user alone, often a token, becomes `***` too (`https://***@host`);
//! - the value after `Authorization:`, `Bearer `, `Basic ` and of `token=`,
//!   `access_token=`, `refresh_token=`, `password=`, `secret=` becomes `***`;
//! - every value registered as secret ([`register_secret`]: build secrets, build args
//!   whose names look secret, registry credentials, proxy passwords) becomes `***`
//!   wherever it appears.
//!
//! Names look secret by BuildKit's own `SecretsUsedInArgOrEnv` rule ([`is_secret_name`]).

use std::borrow::Cow;
use std::sync::{OnceLock, RwLock};

/// What a redacted value is replaced with.
pub const MASK: &str = "***";

/// Values shorter than this are not registered: masking `1` everywhere would hide more
/// than it protects.
const MIN_SECRET_LEN: usize = 4;

fn registry() -> &'static RwLock<Vec<String>> {
    static SECRETS: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| RwLock::new(Vec::new()))
}

/// Marks `value` as secret for the rest of the process: [`redact`] masks it wherever it
/// appears (also as JSON escapes it).
pub fn register_secret(value: &str) {
    let value = value.trim();
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut forms = vec![value.to_owned()];
    if let Ok(json) = serde_json::to_string(value) {
        let inner = json.trim_matches('"').to_owned();
        if inner != value {
            forms.push(inner);
        }
    }
    let mut secrets = registry().write().unwrap_or_else(|e| e.into_inner());
    for form in forms {
        if !secrets.contains(&form) {
            secrets.push(form);
        }
    }
    // Longest first, so that a secret containing another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Whether a variable's name says it holds a secret, by BuildKit's
/// `SecretsUsedInArgOrEnv` rule: an `_`-separated word among `apikey`, `auth`,
/// `credential(s)`, `key`, `password`, `pword`, `passwd`, `secret`, `token`, and none
/// among `public`, `file`, `version` (`NPM_TOKEN` yes, `PUBLIC_KEY` no).
pub fn is_secret_name(name: &str) -> bool {
    const DENY: [&str; 10] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: [&str; 3] = ["public", "file", "version"];
    let words: Vec<String> = name.split('_').map(str::to_ascii_lowercase).collect();
    words.iter().any(|w| DENY.contains(&w.as_str()))
        && !words.iter().any(|w| ALLOW.contains(&w.as_str()))
}

/// `text` with every secret masked (the rule above). Borrowed when nothing is.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    if text.contains("://") && text.contains('@') {
        out = Cow::Owned(redact_userinfo(&out));
    }
    // One lower-cased copy for every marker (masking only removes text, so a marker
    // absent from it is absent after any of them).
    let lower = out.to_ascii_lowercase();
    for (key, cut) in KEYED {
        if lower.contains(key) {
            out = Cow::Owned(redact_after(&out, key, *cut));
        }
    }
    let secrets = registry().read().unwrap_or_else(|e| e.into_inner());
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), MASK));
        }
    }
    out
}

/// Markers whose value follows them, and what ends that value.
const KEYED: &[(&str, Cut)] = &[
    ("authorization: ", Cut::Line),
    ("bearer ", Cut::Word),
    ("basic ", Cut::Word),
    ("access_token=", Cut::Param),
    ("refresh_token=", Cut::Param),
    ("token=", Cut::Param),
    ("password=", Cut::Param),
    ("secret=", Cut::Param),
];

#[derive(Clone, Copy)]
enum Cut {
    /// To the end of the line.
    Line,
    /// To the next space, quote or comma.
    Word,
    /// To the next `&`, space, quote or comma.
    Param,
}

fn redact_after(text: &str, key: &str, cut: Cut) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find(key) {
        let start = at + found + key.len();
        out.push_str(&text[at..start]);
        let rest = &text[start..];
        let end = rest
            .find(|c: char| match cut {
                Cut::Line => c == '\n' || c == '"',
                Cut::Word => c.is_whitespace() || matches!(c, '"' | '\'' | ','),
                Cut::Param => c.is_whitespace() || matches!(c, '&' | '"' | '\'' | ','),
            })
            .unwrap_or(rest.len());
        if end > 0 && &rest[..end] != MASK {
            out.push_str(MASK);
        } else {
            out.push_str(&rest[..end]);
        }
        at = start + end;
    }
    out.push_str(&text[at..]);
    out
}

/// Every `scheme://user:password@host` in `text` as `scheme://user:***@host`, and
/// `scheme://user@host` as `scheme://***@host`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = rest.find("://") {
        let authority_start = found + 3;
        out.push_str(&rest[..authority_start]);
        let after = &rest[authority_start..];
        let authority_end = after
            .find(|c: char| {
                matches!(c, '/' | '?' | '#')
                    || c.is_whitespace()
                    || matches!(c, '"' | '\'' | '`' | ',')
            })
            .unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push(':');
                        out.push_str(MASK);
                    }
                    None => out.push_str(MASK),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    out
}

/// A value shown with [`redact`] applied.
#[derive(Debug, Clone, Copy)]
pub struct Redacted<T>(pub T);

impl<T: std::fmt::Display> std::fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_in_urls() {
        assert_eq!(
            redact("HTTPS_PROXY=http://alice:s3cr3tpw@proxy:3128 (this shell)"),
            "HTTPS_PROXY=http://alice:***@proxy:3128 (this shell)"
        );
        assert_eq!(
            redact("mirror `https://bob:pw123@host:5001/v2/` and https://ghp_abc@github.com/x.git"),
            "mirror `https://bob:***@host:5001/v2/` and https://***@github.com/x.git"
        );
        assert_eq!(
            redact("email me: a@b.c, see http://host/a@b"),
            "email me: a@b.c, see http://host/a@b"
        );
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn tokens_and_headers() {
        assert_eq!(
            redact("Authorization: Bearer eyJhbGciOi.abc.def\nnext"),
            "Authorization: ***\nnext"
        );
        assert_eq!(
            redact("GET /token?scope=x&access_token=abc123&x=1"),
            "GET /token?scope=x&access_token=***&x=1"
        );
        assert_eq!(redact("used bearer abcdef, then"), "used bearer ***, then");
    }

    #[test]
    fn registered_values() {
        register_secret("n0t-so-\"quoted\"-s3cret");
        register_secret("ab");
        let json = serde_json::json!({"message": "arg was n0t-so-\"quoted\"-s3cret"}).to_string();
        assert!(!redact(&json).contains("s3cret"), "{json}");
        assert_eq!(redact("tab"), "tab", "too short to register");
    }

    #[test]
    fn secret_names_as_buildkit_says() {
        for name in [
            "NPM_TOKEN",
            "api_key",
            "AUTH",
            "DATABASE_PASSWORD",
            "secret_MESSAGE",
            "GH_AUTH_TOKEN",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "PUBLIC_KEY",
            "TOKENIZER",
            "KEYBOARD",
            "GO_VERSION",
            "KEY_FILE",
            "MONKEY",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
