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
    has_word(name, &DENY) && !has_word(name, &ALLOW)
}

/// Whether one of `name`'s `_`-separated words is among `words` (any case).
fn has_word(name: &str, words: &[&str]) -> bool {
    name.split('_')
        .any(|w| words.iter().any(|l| l.eq_ignore_ascii_case(w)))
}

/// Whether a variable set to `value` (as written: `None` when the Dockerfile gives no
/// value) holds a secret: its name says so ([`is_secret_name`]), and its value is not one
/// of those that only point at or identify a secret:
///
/// - a path (`GOOGLE_APPLICATION_CREDENTIALS=/run/app/key.json`, `./`, `~/`, `${DIR}/…`,
///   `C:\…`): where a secret is mounted, not the secret;
/// - public key fingerprints or key ids in a variable named for GnuPG/PGP
///   (`GPG_KEY 3F1C…1D70`, fed to `gpg --recv-keys` as official images do);
/// - nothing (`ENV API_TOKEN=`).
///
/// A value given later (`ARG NPM_TOKEN` with no default) is a secret when the name says so.
pub fn holds_secret(name: &str, value: Option<&str>) -> bool {
    if !is_secret_name(name) {
        return false;
    }
    let Some(value) = value else {
        return true;
    };
    let value = value.trim().trim_matches(['"', '\'']).trim();
    !(value.is_empty() || is_path(value) || is_key_fingerprint(name, value))
}

/// A file system path, absolute or relative (`/…`, `./…`, `../…`, `~/…`, `${VAR}/…`,
/// `$VAR/…`, `C:\…`), with no space in it.
fn is_path(value: &str) -> bool {
    if value.contains(char::is_whitespace) {
        return false;
    }
    let after_variable = value
        .strip_prefix("${")
        .and_then(|rest| rest.split_once('}'))
        .map(|(_, rest)| rest)
        .or_else(|| {
            value.strip_prefix('$').map(|rest| {
                rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_')
            })
        });
    let drive = value.as_bytes();
    value.starts_with('/')
        || value.starts_with("./")
        || value.starts_with("../")
        || value.starts_with("~/")
        || after_variable.is_some_and(|rest| rest.starts_with('/'))
        || (drive.len() > 2
            && drive[0].is_ascii_alphabetic()
            && drive[1] == b':'
            && (drive[2] == b'\\' || drive[2] == b'/'))
}

/// Public key ids or fingerprints (8, 16, 40 or 64 hex digits, optionally `0x`, several
/// separated by spaces) in a variable whose name has a `gpg`, `pgp` or `gnupg` word.
fn is_key_fingerprint(name: &str, value: &str) -> bool {
    has_word(name, &["gpg", "pgp", "gnupg"])
        && value.split_whitespace().all(|id| {
            let hex = id.strip_prefix("0x").unwrap_or(id);
            [8, 16, 40, 64].contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit())
        })
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
    fn paths_fingerprints_and_nothing_hold_no_secret() {
        for (name, value) in [
            ("REGISTRY_PASSWORD", Some("Adm1n2024")),
            ("NPM_TOKEN", None),
            (
                "GITHUB_TOKEN",
                Some("3f1c0a5e7d2b94c8e61a07f53b9d2c4e8a6f1d70"),
            ),
            ("GPG_KEY", Some("hunter2 is not hex")),
            ("API_KEY", Some("/not a path")),
        ] {
            assert!(holds_secret(name, value), "{name}={value:?}");
        }
        for (name, value) in [
            ("GPG_KEY", Some("3F1C0A5E7D2B94C8E61A07F53B9D2C4E8A6F1D70")),
            (
                "PGP_KEY",
                Some("0x6A010C5166006599 A4A9406876FCBD3C456770C88C718D3B5072E1F5"),
            ),
            ("GOOGLE_APPLICATION_CREDENTIALS", Some("/run/app/key.json")),
            ("SSH_KEY", Some("\"~/.ssh/id_ed25519\"")),
            ("AUTH_TOKEN", Some("${SECRETS_DIR}/token")),
            ("SERVICE_KEY", Some("C:\\keys\\service.pem")),
            ("API_TOKEN", Some("")),
            ("GO_VERSION", None),
        ] {
            assert!(!holds_secret(name, value), "{name}={value:?}");
        }
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
