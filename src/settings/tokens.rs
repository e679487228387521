//! The listener's bearer tokens, each with its scope: the `<token>` entries
//! of wsbridge.conf's `<listen-tokens>` section, and the old flat
//! `listen-tokens` param (unscoped: any destination, the client's own
//! caller ID, `listen-context`, the listener's limits).
//!
//! Pure: the FFI layer hands each `<token>` element's attributes over as
//! plain pairs, read here by [`TokenScope::from_attributes`].

use std::fmt;
use std::sync::Arc;

/// The shortest `secret` accepted; a shorter one is refused at load.
pub const MIN_SECRET_CHARS: usize = 20;
/// Longest token name (it becomes `accountcode` and `wsbridge_in_token`).
const MAX_NAME_CHARS: usize = 64;
/// The attributes a `<token>` element may have.
const ATTRIBUTES: [&str; 9] = [
    "name",
    "sha256",
    "secret",
    "context",
    "destinations",
    "caller-id-numbers",
    "max-calls",
    "calls-per-second",
    "max-seconds",
];

/// A regex the whole value must match.
#[derive(Clone)]
pub struct WholeMatch {
    source: String,
    regex: regex::Regex,
}

impl WholeMatch {
    pub fn new(source: &str) -> Result<WholeMatch, String> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|error| error.to_string().lines().last().unwrap_or_default().trim().to_string())?;
        Ok(WholeMatch { source: source.to_string(), regex })
    }

    pub fn matches(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

impl PartialEq for WholeMatch {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for WholeMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

/// Whose caller ID number a call carries.
#[derive(Debug, Clone, PartialEq)]
pub enum CallerIdRule {
    /// The client's, which must match (and must be given).
    Matching(WholeMatch),
    /// The token's name, whatever the client says.
    TokenName,
    /// The client's own, or its address (an unscoped token: today's behaviour).
    Client,
}

/// What one token may do.
#[derive(Clone, PartialEq)]
pub struct TokenScope {
    pub name: String,
    digest: [u8; 32],
    /// The dialplan context its calls land in.
    pub context: String,
    /// None: any destination (unscoped tokens only).
    pub destinations: Option<WholeMatch>,
    pub caller_id: CallerIdRule,
    /// Its calls up at once; None: only the listener's limit.
    pub max_calls: Option<usize>,
    /// New calls a second, on average; None: no limit.
    pub calls_per_second: Option<f64>,
    /// Hang up this long after the answer (`ALLOTTED_TIMEOUT`); None: never.
    pub max_seconds: Option<u64>,
    /// From the flat `listen-tokens` param.
    pub unscoped: bool,
}

impl fmt::Debug for TokenScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the digest: it is as good as the secret for a brute force.
        f.debug_struct("TokenScope")
            .field("name", &self.name)
            .field("context", &self.context)
            .field("destinations", &self.destinations)
            .field("caller_id", &self.caller_id)
            .field("max_calls", &self.max_calls)
            .field("calls_per_second", &self.calls_per_second)
            .field("max_seconds", &self.max_seconds)
            .finish()
    }
}

fn digest(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref());
    out
}

/// 64 hex digits, as `sha256sum` or `openssl dgst -sha256` print them.
fn hex_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16).ok()?;
    }
    Some(out)
}

/// A dialplan context's name: what `listen-context` accepts too.
pub fn valid_context(text: &str) -> bool {
    !text.is_empty() && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

fn valid_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_NAME_CHARS
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// A number within `min..=max`, or why not.
fn number<T: std::str::FromStr + PartialOrd + fmt::Display + Copy>(
    name: &str,
    value: &str,
    min: T,
    max: T,
) -> Result<T, String> {
    match value.trim().parse::<T>() {
        Ok(number) if number >= min && number <= max => Ok(number),
        _ => Err(format!("{name}='{value}' is not a number from {min} to {max}")),
    }
}

impl TokenScope {
    /// One `<token .../>` element. `default_context` is `listen-context`. The
    /// error names the token (or its place) and what is wrong, never the secret.
    pub fn from_attributes(
        attributes: &[(String, String)],
        place: usize,
        default_context: &str,
    ) -> Result<TokenScope, String> {
        let get = |name: &str| attributes.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
        let name = get("name").map(str::trim).unwrap_or_default();
        let shown = if name.is_empty() { format!("the token at place {place}") } else { format!("token '{name}'") };
        let wrong = |why: String| format!("<listen-tokens>: {shown} refused: {why}");
        if !valid_name(name) {
            return Err(wrong(format!("its name must be 1 to {MAX_NAME_CHARS} of A-Z, a-z, 0-9, _, - and .")));
        }
        if let Some((unknown, _)) = attributes.iter().find(|(key, _)| !ATTRIBUTES.contains(&key.as_str())) {
            return Err(wrong(format!("unknown attribute '{unknown}'")));
        }
        let digest = match (get("sha256"), get("secret")) {
            (Some(_), Some(_)) => return Err(wrong("give sha256 or secret, not both".into())),
            (None, None) => return Err(wrong("it has neither sha256 nor secret".into())),
            (Some(hex), None) => hex_digest(hex).ok_or_else(|| wrong("sha256 is not 64 hex digits".into()))?,
            (None, Some(secret)) if secret.chars().count() < MIN_SECRET_CHARS => {
                return Err(wrong(format!("its secret is shorter than {MIN_SECRET_CHARS} characters")))
            }
            (None, Some(secret)) => digest(secret),
        };
        let context = get("context").map(str::trim).unwrap_or(default_context);
        if !valid_context(context) {
            return Err(wrong(format!("context '{context}' is not a context name (A-Z, a-z, 0-9, _, - and .)")));
        }
        let pattern = |attribute: &str| -> Result<Option<WholeMatch>, String> {
            get(attribute)
                .map(|source| {
                    WholeMatch::new(source).map_err(|why| wrong(format!("{attribute} is not a regex: {why}")))
                })
                .transpose()
        };
        let destinations = pattern("destinations")?
            .ok_or_else(|| wrong("it has no destinations (a regex; \".*\" allows any)".into()))?;
        let caller_id = pattern("caller-id-numbers")?.map_or(CallerIdRule::TokenName, CallerIdRule::Matching);
        let limit = |attribute: &str, max: u64| -> Result<Option<u64>, String> {
            get(attribute).map(|value| number(attribute, value, 1, max).map_err(wrong)).transpose()
        };
        let calls_per_second = get("calls-per-second")
            .map(|value| number("calls-per-second", value, 0.001, 10_000.0).map_err(wrong))
            .transpose()?;
        Ok(TokenScope {
            name: name.to_string(),
            digest,
            context: context.to_string(),
            destinations: Some(destinations),
            caller_id,
            max_calls: limit("max-calls", 100_000)?.map(|max| max as usize),
            calls_per_second,
            max_seconds: limit("max-seconds", 7 * 86_400)?,
            unscoped: false,
        })
    }

    /// A token of the flat `listen-tokens` param: today's behaviour.
    fn unscoped(secret: &str, place: usize, context: &str) -> TokenScope {
        TokenScope {
            name: format!("unscoped-{place}"),
            digest: digest(secret),
            context: context.to_string(),
            destinations: None,
            caller_id: CallerIdRule::Client,
            max_calls: None,
            calls_per_second: None,
            max_seconds: None,
            unscoped: true,
        }
    }

    pub fn allows_destination(&self, destination: &str) -> bool {
        self.destinations.as_ref().is_none_or(|pattern| pattern.matches(destination))
    }

    /// The caller ID number a call carries: `client` is what the client
    /// asked for, `address` its IP. Err: why the client may not.
    pub fn caller_id_number(&self, client: Option<&str>, address: &str) -> Result<String, String> {
        match (&self.caller_id, client) {
            (CallerIdRule::Client, client) => Ok(client.unwrap_or(address).to_string()),
            (CallerIdRule::TokenName, _) => Ok(self.name.clone()),
            (CallerIdRule::Matching(pattern), Some(number)) if pattern.matches(number) => Ok(number.to_string()),
            (CallerIdRule::Matching(_), Some(_)) => Err("caller ID number not allowed for this token".into()),
            (CallerIdRule::Matching(_), None) => Err("this token needs a caller_id_number".into()),
        }
    }
}

/// The tokens that admit a client, kept as SHA-256 digests so every
/// comparison takes the same time whatever the token's length or content.
#[derive(Clone, PartialEq, Default)]
pub struct Tokens(Vec<Arc<TokenScope>>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// Unscoped tokens separated by spaces or commas (the flat `listen-tokens` param), into `context`.
    pub fn unscoped(text: &str, context: &str) -> Tokens {
        let secrets = text.split([' ', ',', '\t', '\n']).filter(|t| !t.is_empty());
        Tokens(
            secrets
                .enumerate()
                .map(|(index, secret)| Arc::new(TokenScope::unscoped(secret, index + 1, context)))
                .collect(),
        )
    }

    /// The `<token>` elements of `<listen-tokens>`; a line for each one refused.
    pub fn scoped(elements: &[Vec<(String, String)>], default_context: &str) -> (Tokens, Vec<String>) {
        let mut tokens: Vec<Arc<TokenScope>> = Vec::new();
        let mut problems = Vec::new();
        for (index, attributes) in elements.iter().enumerate() {
            match TokenScope::from_attributes(attributes, index + 1, default_context) {
                Ok(scope) if tokens.iter().any(|other| other.name == scope.name) => problems
                    .push(format!("<listen-tokens>: token '{}' refused: a second token of that name", scope.name)),
                Ok(scope) if tokens.iter().any(|other| other.digest == scope.digest) => problems
                    .push(format!("<listen-tokens>: token '{}' refused: the same secret as another token", scope.name)),
                Ok(scope) => tokens.push(Arc::new(scope)),
                Err(why) => problems.push(why),
            }
        }
        (Tokens(tokens), problems)
    }

    /// Both kinds together; a token whose secret is already scoped is left out.
    pub fn with_unscoped(mut self, unscoped: Tokens) -> Tokens {
        for token in unscoped.0 {
            if !self.0.iter().any(|other| other.digest == token.digest) {
                self.0.push(token);
            }
        }
        self
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn unscoped_count(&self) -> usize {
        self.0.iter().filter(|token| token.unscoped).count()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<TokenScope>> {
        self.0.iter()
    }

    /// The token `presented` is, if any. Every token is compared, each in
    /// constant time, and the match is picked without branching on the bytes.
    pub fn find(&self, presented: Option<&str>) -> Option<Arc<TokenScope>> {
        let presented = digest(presented?);
        let mut found = usize::MAX;
        for (index, token) in self.0.iter().enumerate() {
            let difference = token.digest.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            let equal = std::hint::black_box(usize::from(difference == 0));
            // All ones when equal, zero otherwise.
            let mask = equal.wrapping_neg();
            found = (found & !mask) | (index & mask);
        }
        self.0.get(found).cloned()
    }

    /// Whether `presented` is one of the tokens.
    pub fn admits(&self, presented: Option<&str>) -> bool {
        self.find(presented).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const SECRET: &str = "a-secret-of-twenty-plus";

    fn sha256_hex(text: &str) -> String {
        digest(text).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_issue_example_reads() {
        let hex = sha256_hex(SECRET);
        let element = attributes(&[
            ("name", "bot-a"),
            ("sha256", &hex),
            ("context", "bots"),
            ("destinations", r"^9\d{3}$"),
            ("caller-id-numbers", r"^\+1555\d{7}$"),
            ("max-calls", "10"),
            ("calls-per-second", "2"),
            ("max-seconds", "1800"),
        ]);
        let scope = TokenScope::from_attributes(&element, 1, "public").unwrap();
        assert_eq!((scope.name.as_str(), scope.context.as_str()), ("bot-a", "bots"));
        assert_eq!((scope.max_calls, scope.calls_per_second, scope.max_seconds), (Some(10), Some(2.0), Some(1800)));
        assert!(scope.allows_destination("9123") && !scope.allows_destination("91234"));
        assert!(!scope.allows_destination("0019123"), "the whole value must match");
        assert_eq!(scope.caller_id_number(Some("+15551234567"), "10.0.0.1").unwrap(), "+15551234567");
        assert!(scope.caller_id_number(Some("+15551234567999"), "10.0.0.1").unwrap_err().contains("caller ID"));
        assert!(scope.caller_id_number(None, "10.0.0.1").is_err());
        let tokens = Tokens::scoped(&[element], "public").0;
        assert_eq!(tokens.find(Some(SECRET)).unwrap().name, "bot-a");
        let upper = attributes(&[("name", "x"), ("sha256", &hex.to_uppercase()), ("destinations", ".*")]);
        assert!(TokenScope::from_attributes(&upper, 1, "public").is_ok(), "hex in either case");
    }

    #[test]
    fn a_secret_in_place_of_the_digest_and_the_defaults() {
        let element = attributes(&[("name", "b"), ("secret", SECRET), ("destinations", "1000|1001")]);
        let scope = TokenScope::from_attributes(&element, 1, "listen-ctx").unwrap();
        assert_eq!(scope.context, "listen-ctx", "listen-context unless the token names one");
        assert_eq!((scope.max_calls, scope.calls_per_second, scope.max_seconds), (None, None, None));
        assert!(scope.allows_destination("1001") && !scope.allows_destination("10001"));
        assert_eq!(scope.caller_id_number(Some("+4412345"), "10.0.0.1").unwrap(), "b", "replaced by the name");
        assert_eq!(scope.caller_id_number(None, "10.0.0.1").unwrap(), "b");
    }

    #[test]
    fn refusals_name_the_token_and_never_the_secret() {
        let short = "short-secret-19chars";
        assert_eq!(short.len(), 20);
        let too_short = &short[..19];
        let cases: Vec<(Vec<(String, String)>, &str)> = vec![
            (attributes(&[("name", "t1"), ("secret", too_short), ("destinations", ".*")]), "shorter than 20"),
            (attributes(&[("name", "t2"), ("destinations", ".*")]), "neither sha256 nor secret"),
            (attributes(&[("name", "t3"), ("secret", SECRET), ("sha256", &sha256_hex(SECRET))]), "not both"),
            (attributes(&[("name", "t4"), ("sha256", "abc"), ("destinations", ".*")]), "64 hex"),
            (attributes(&[("name", "t5"), ("secret", SECRET)]), "no destinations"),
            (attributes(&[("name", "t6"), ("secret", SECRET), ("destinations", "(")]), "destinations is not a regex"),
            (
                attributes(&[("name", "t7"), ("secret", SECRET), ("destinations", ".*"), ("max-calls", "0")]),
                "max-calls",
            ),
            (
                attributes(&[("name", "t8"), ("secret", SECRET), ("destinations", ".*"), ("calls-per-second", "x")]),
                "calls-per-second",
            ),
            (attributes(&[("name", "t9"), ("secret", SECRET), ("destinations", ".*"), ("context", "a b")]), "context"),
            (
                attributes(&[("name", "t10"), ("secret", SECRET), ("destination", "1")]),
                "unknown attribute 'destination'",
            ),
            (attributes(&[("name", "bad name"), ("secret", SECRET), ("destinations", ".*")]), "its name"),
        ];
        for (element, expected) in cases {
            let why = TokenScope::from_attributes(&element, 4, "public").unwrap_err();
            assert!(why.contains(expected), "{why}");
            assert!(why.contains("token '") || why.contains("place 4"), "{why}");
            assert!(!why.contains(too_short) && !why.contains(SECRET), "{why}");
        }
        let nameless = attributes(&[("secret", SECRET), ("destinations", ".*")]);
        assert!(TokenScope::from_attributes(&nameless, 4, "public").unwrap_err().contains("the token at place 4"));
    }

    #[test]
    fn duplicates_are_refused_and_the_rest_kept() {
        let elements = vec![
            attributes(&[("name", "a"), ("secret", SECRET), ("destinations", ".*")]),
            attributes(&[("name", "a"), ("secret", "another-secret-of-20-chars"), ("destinations", ".*")]),
            attributes(&[("name", "b"), ("secret", SECRET), ("destinations", ".*")]),
            attributes(&[("name", "c"), ("secret", "third-secret-of-twenty-chars"), ("destinations", ".*")]),
        ];
        let (tokens, problems) = Tokens::scoped(&elements, "public");
        assert_eq!(tokens.len(), 2);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("token 'a'") && problems[1].contains("token 'b'"));
    }

    #[test]
    fn unscoped_tokens_keep_todays_behaviour() {
        let tokens = Tokens::unscoped(" alpha, beta\tgamma ", "bots");
        assert_eq!((tokens.len(), tokens.unscoped_count()), (3, 3));
        let gamma = tokens.find(Some("gamma")).unwrap();
        assert_eq!((gamma.name.as_str(), gamma.context.as_str()), ("unscoped-3", "bots"));
        assert!(gamma.allows_destination("anything+at*all"));
        assert_eq!(gamma.caller_id_number(Some("bot7"), "10.0.0.1").unwrap(), "bot7");
        assert_eq!(gamma.caller_id_number(None, "10.0.0.1").unwrap(), "10.0.0.1");
        assert_eq!((gamma.max_calls, gamma.calls_per_second, gamma.max_seconds), (None, None, None));
        for bad in ["", "alph", "alphaa", "ALPHA", "beta gamma"] {
            assert!(!tokens.admits(Some(bad)), "{bad}");
        }
        assert!(!tokens.admits(None));
        assert!(!Tokens::unscoped("", "x").admits(Some("")), "no tokens admit nobody");
        assert_eq!(format!("{tokens:?}"), "Tokens(3 configured)", "tokens never reach a log");
        let scoped = Tokens::scoped(&[attributes(&[("name", "s"), ("secret", SECRET), ("destinations", "1")])], "p").0;
        let both = scoped.with_unscoped(Tokens::unscoped(&format!("{SECRET} alpha"), "p"));
        assert_eq!(both.len(), 2, "a secret that is scoped already is not added unscoped");
        assert_eq!(both.find(Some(SECRET)).unwrap().name, "s");
    }

    #[test]
    fn the_first_of_many_is_found_by_value() {
        let text: Vec<String> = (0..50).map(|i| format!("token-{i}")).collect();
        let tokens = Tokens::unscoped(&text.join(" "), "p");
        for (index, secret) in text.iter().enumerate() {
            assert_eq!(tokens.find(Some(secret)).unwrap().name, format!("unscoped-{}", index + 1));
        }
        assert!(tokens.find(Some("token-50")).is_none());
    }

    #[test]
    fn debug_shows_no_digest() {
        let scope = TokenScope::from_attributes(
            &attributes(&[("name", "d"), ("secret", SECRET), ("destinations", "1")]),
            1,
            "p",
        )
        .unwrap();
        let shown = format!("{scope:?}");
        assert!(shown.contains("\"d\"") && !shown.contains("digest"), "{shown}");
    }
}
