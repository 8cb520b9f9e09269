//! `docs/openapi.yaml` cannot drift from the account app:
//!
//! - the (method, path) pairs the router registers — read from the source of `fn router` in
//!   `src/account/mod.rs` by the small parser below — equal the (method, path) pairs the spec
//!   describes;
//! - a running gateway serves every documented operation (never the router's 404 or 405
//!   fallback, and only statuses the spec lists for it), and answers 405 for every other
//!   common method on a documented path;
//! - the spec is structurally sound OpenAPI 3.1 (operations have responses, every `$ref`
//!   resolves, path parameters match the templates, security schemes exist, state-changing
//!   `/auth/api/` calls take `X-CSRF-Token`);
//! - every `error` code the handlers return is listed in the spec, and every code the spec
//!   lists exists in the source.
//!
//! Each check also asserts it found a plausible amount of input, so an empty parse fails
//! instead of passing vacuously.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::harness::TestGateway;

const ROUTER_FILE: &str = "src/account/mod.rs";
const SPEC_FILE: &str = "docs/openapi.yaml";
/// Files whose `const NAME: &str = "...";` a `.route(NAME, ...)` may use as its path.
const CONST_FILES: &[&str] = &["src/account/mod.rs", "src/web.rs"];
/// Files any documented `error` code must appear in as a string literal.
const CODE_SOURCES: &[&str] = &["src/account", "src/web.rs", "src/proxy", "src/oauth"];
/// Codes the handlers have but no operation lists: the router's fallback for a known path
/// with an unregistered method (described in the spec's info section).
const UNDOCUMENTED_CODES: &[&str] = &["method_not_allowed"];
/// OpenAPI's operation keys (HTTP methods) in a path item.
const OPERATION_KEYS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];
/// Methods the live check tries on every documented path: a documented one must be served,
/// any other must be the router's 405.
const PROBED_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// --- a minimal Rust lexer ----------------------------------------------------------------------
//
// Just enough to read `fn router`: identifiers, string literals (decoded), punctuation;
// comments and whitespace dropped, char literals and lifetimes skipped, so a `.route(` inside
// a comment or a `"//"` inside a string cannot confuse the parser.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// An identifier, keyword or number.
    Ident(String),
    /// A string literal's value.
    Str(String),
    Punct(char),
}

fn lex(src: &str) -> Vec<Tok> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            loop {
                assert!(i < chars.len(), "unterminated block comment");
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            let (s, end) = cooked_string(&chars, i + 1);
            toks.push(Tok::Str(s));
            i = end;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a, 'static).
            if next == Some('\\') {
                // Past the backslash and the escaped character, to the closing quote.
                i += 3;
                while chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                toks.push(Tok::Punct('\''));
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let at = chars.get(i).copied();
            if matches!(word.as_str(), "r" | "br") && matches!(at, Some('"' | '#')) {
                let (s, end) = raw_string(&chars, i);
                toks.push(Tok::Str(s));
                i = end;
            } else if word == "b" && at == Some('"') {
                let (s, end) = cooked_string(&chars, i + 1);
                toks.push(Tok::Str(s));
                i = end;
            } else {
                toks.push(Tok::Ident(word));
            }
        } else {
            toks.push(Tok::Punct(c));
            i += 1;
        }
    }
    toks
}

/// A `"..."` literal whose contents start at `i`: (value, index after the closing quote).
fn cooked_string(chars: &[char], mut i: usize) -> (String, usize) {
    let mut s = String::new();
    loop {
        match chars.get(i) {
            None => panic!("unterminated string literal"),
            Some('"') => return (s, i + 1),
            Some('\\') => {
                match chars.get(i + 1) {
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('\n') => {
                        // A line continuation: the newline and the next line's indent vanish.
                        i += 2;
                        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
                            i += 1;
                        }
                        continue;
                    }
                    Some(&other) => s.push(other),
                    None => panic!("unterminated string literal"),
                }
                i += 2;
            }
            Some(&c) => {
                s.push(c);
                i += 1;
            }
        }
    }
}

/// A raw string `#*"..."#*` starting at `i` (after the `r`): (value, index after it).
fn raw_string(chars: &[char], mut i: usize) -> (String, usize) {
    let mut hashes = 0;
    while chars[i] == '#' {
        hashes += 1;
        i += 1;
    }
    assert_eq!(chars[i], '"', "malformed raw string");
    i += 1;
    let start = i;
    loop {
        assert!(i < chars.len(), "unterminated raw string");
        if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
            return (chars[start..i].iter().collect(), i + 1 + hashes);
        }
        i += 1;
    }
}

fn is_ident(t: Option<&Tok>, word: &str) -> bool {
    matches!(t, Some(Tok::Ident(w)) if w == word)
}

fn is_punct(t: Option<&Tok>, c: char) -> bool {
    t == Some(&Tok::Punct(c))
}

/// Index of the bracket closing the one at `open` (`(`, `[` or `{`; any kind nests).
fn closing(toks: &[Tok], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced brackets");
}

/// Splits a token list at its top-level commas (a trailing comma adds nothing).
fn split_args(toks: &[Tok]) -> Vec<&[Tok]> {
    let mut args = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                args.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < toks.len() {
        args.push(&toks[start..]);
    }
    args
}

/// How often `.name(` occurs.
fn count_calls(toks: &[Tok], name: &str) -> usize {
    toks.windows(3)
        .filter(|w| {
            is_punct(Some(&w[0]), '.') && is_ident(Some(&w[1]), name) && is_punct(Some(&w[2]), '(')
        })
        .count()
}

// --- the router's routes -----------------------------------------------------------------------

/// `const NAME: <type mentioning str> = "value";` in the given sources.
fn string_consts(sources: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for src in sources {
        let toks = lex(src);
        for i in 0..toks.len() {
            let (Some(Tok::Ident(name)), true) = (toks.get(i + 1), is_ident(toks.get(i), "const"))
            else {
                continue;
            };
            let Some(eq) = (i + 2..toks.len().min(i + 12)).find(|&j| is_punct(toks.get(j), '='))
            else {
                continue;
            };
            let is_str = toks[i + 2..eq].iter().any(|t| is_ident(Some(t), "str"));
            if let (true, Some(Tok::Str(value)), true) =
                (is_str, toks.get(eq + 1), is_punct(toks.get(eq + 2), ';'))
            {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    out
}

/// The methods a method-router expression registers: `get(h)`, `axum::routing::delete(h)`,
/// then any chain of `.post(h)`, `.layer(..)`, ... Unknown calls fail loudly, so a new way of
/// registering a route makes the test fail until the parser understands it.
fn methods_of(expr: &[Tok], path: &str) -> Vec<String> {
    let mut calls = Vec::new();
    let mut i = 0;
    // The head: a possibly qualified function name, then its arguments.
    let mut name = None;
    while let Some(Tok::Ident(word)) = expr.get(i) {
        name = Some(word.clone());
        i += 1;
        if is_punct(expr.get(i), ':') && is_punct(expr.get(i + 1), ':') {
            i += 2;
        } else {
            break;
        }
    }
    let head = name.unwrap_or_else(|| {
        panic!("{path}: the method router does not start with a function call: {expr:?}")
    });
    assert!(
        is_punct(expr.get(i), '('),
        "{path}: expected `(` after `{head}`"
    );
    i = closing(expr, i) + 1;
    calls.push(head);
    // The chain.
    while i < expr.len() {
        let (true, Some(Tok::Ident(call)), true) = (
            is_punct(expr.get(i), '.'),
            expr.get(i + 1),
            is_punct(expr.get(i + 2), '('),
        ) else {
            panic!("{path}: cannot read the method router from token {i}: {expr:?}");
        };
        calls.push(call.clone());
        i = closing(expr, i + 2) + 1;
    }
    let mut methods = Vec::new();
    for (n, call) in calls.iter().enumerate() {
        let method = call.strip_suffix("_service").unwrap_or(call);
        match method {
            "get" | "post" | "put" | "patch" | "delete" | "head" | "options" | "trace" => {
                methods.push(method.to_ascii_uppercase())
            }
            // Wrap the handlers; register nothing.
            "layer" | "route_layer" | "with_state" if n > 0 => {}
            other => panic!(
                "{path}: `{other}(..)` in a method router: teach tests/it/openapi.rs which \
                 methods it registers"
            ),
        }
    }
    methods
}

/// Every (method, path) registered in `fn router` of `src`: each `.route(path, methods)`,
/// with `path` a string literal or a `const` from `consts`. Panics on anything it does not
/// understand (a route outside `fn router`, `.nest`, `.merge`, `any(..)`, a computed path).
fn parse_router(src: &str, consts: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let toks = lex(src);
    for unsupported in ["nest", "nest_service", "merge", "route_service"] {
        assert_eq!(
            count_calls(&toks, unsupported),
            0,
            "`.{unsupported}(` registers routes tests/it/openapi.rs cannot see; teach it"
        );
    }
    let start = (0..toks.len())
        .find(|&i| is_ident(toks.get(i), "fn") && is_ident(toks.get(i + 1), "router"))
        .expect("no `fn router` in the router file");
    let open = (start..toks.len())
        .find(|&i| is_punct(toks.get(i), '{'))
        .expect("`fn router` has no body");
    let body = &toks[open..=closing(&toks, open)];
    assert_eq!(
        count_calls(body, "route"),
        count_calls(&toks, "route"),
        "a `.route(` outside `fn router`: teach tests/it/openapi.rs to read it"
    );

    let mut routes = Vec::new();
    let mut i = 0;
    while i + 2 < body.len() {
        if !(is_punct(body.get(i), '.')
            && is_ident(body.get(i + 1), "route")
            && is_punct(body.get(i + 2), '('))
        {
            i += 1;
            continue;
        }
        let end = closing(body, i + 2);
        let args = split_args(&body[i + 3..end]);
        assert_eq!(
            args.len(),
            2,
            "`.route(` with {} arguments: {args:?}",
            args.len()
        );
        let path = match args[0] {
            [Tok::Str(s)] => s.clone(),
            // `NAME` or `crate::web::NAME`: the last segment names the const.
            [.., Tok::Ident(name)]
                if args[0]
                    .iter()
                    .all(|t| matches!(t, Tok::Ident(_) | Tok::Punct(':'))) =>
            {
                consts
                    .get(name)
                    .unwrap_or_else(|| {
                        panic!("route path `{name}`: no `const {name}: &str` in {CONST_FILES:?}")
                    })
                    .clone()
            }
            other => panic!("cannot read the route path {other:?}"),
        };
        for method in methods_of(args[1], &path) {
            routes.push((method, path.clone()));
        }
        i = end + 1;
    }
    routes
}

fn router_routes() -> BTreeSet<(String, String)> {
    let sources: Vec<String> = CONST_FILES.iter().map(|f| read(f)).collect();
    let routes = parse_router(&read(ROUTER_FILE), &string_consts(&sources));
    let set: BTreeSet<_> = routes.iter().cloned().collect();
    assert_eq!(
        set.len(),
        routes.len(),
        "a (method, path) registered twice: {routes:?}"
    );
    set
}

// --- the spec --------------------------------------------------------------------------------

fn spec() -> Value {
    serde_norway::from_str(&read(SPEC_FILE)).unwrap_or_else(|e| panic!("{SPEC_FILE}: {e}"))
}

/// (METHOD, path) -> operation object.
fn spec_operations(spec: &Value) -> BTreeMap<(String, String), &Value> {
    let mut out = BTreeMap::new();
    let paths = spec["paths"].as_object().expect("`paths` is an object");
    for (path, item) in paths {
        for key in OPERATION_KEYS {
            if let Some(op) = item.get(*key) {
                out.insert((key.to_ascii_uppercase(), path.clone()), op);
            }
        }
    }
    out
}

/// Follows a `{"$ref": "#/..."}` (repeatedly) to what it names.
fn deref<'a>(spec: &'a Value, v: &'a Value) -> Option<&'a Value> {
    let mut v = v;
    for _ in 0..16 {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => v = spec.pointer(r.strip_prefix('#')?)?,
            None => return Some(v),
        }
    }
    None
}

/// The parameters of an operation: its path item's, overridden by its own (same name and
/// `in`), references resolved.
fn parameters<'a>(spec: &'a Value, path: &str, op: &'a Value) -> Vec<&'a Value> {
    let item = &spec["paths"][path];
    let mut out: Vec<&Value> = Vec::new();
    for list in [&item["parameters"], &op["parameters"]] {
        for p in list.as_array().into_iter().flatten() {
            let p = deref(spec, p).unwrap_or(p);
            out.retain(|q| !(q["name"] == p["name"] && q["in"] == p["in"]));
            out.push(p);
        }
    }
    out
}

/// `/a/{x}/b/{y}` -> ["x", "y"].
fn template_params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_string)
        .collect()
}

fn collect_refs<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "$ref" {
                    if let Some(r) = child.as_str() {
                        out.push((at.clone(), r));
                    }
                }
                collect_refs(child, format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_refs(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Every `error` code the spec lists: `properties.error.enum` / `.const` anywhere.
fn spec_error_codes(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            if let Some(error) = map.get("properties").and_then(|p| p.get("error")) {
                for code in error["enum"].as_array().into_iter().flatten() {
                    out.insert(code.as_str().expect("error codes are strings").to_string());
                }
                if let Some(code) = error["const"].as_str() {
                    out.insert(code.to_string());
                }
            }
            map.values().for_each(|child| spec_error_codes(child, out));
        }
        Value::Array(items) => items.iter().for_each(|child| spec_error_codes(child, out)),
        _ => {}
    }
}

/// Everything wrong with the spec's structure (empty: fine).
fn structural_problems(spec: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |p: String| problems.push(p);

    if !spec["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1."))
    {
        problem(format!("`openapi` must be 3.1.x, is {}", spec["openapi"]));
    }
    for key in ["title", "version"] {
        if !spec["info"][key].is_string() {
            problem(format!("info.{key} is missing"));
        }
    }
    let schemes = &spec["components"]["securitySchemes"];
    let check_security = |where_: &str, security: &Value, problem: &mut dyn FnMut(String)| {
        for requirement in security.as_array().into_iter().flatten() {
            for name in requirement.as_object().into_iter().flat_map(|m| m.keys()) {
                if schemes.get(name).is_none() {
                    problem(format!("{where_}: security scheme `{name}` is not defined"));
                }
            }
        }
    };
    check_security("top level", &spec["security"], &mut problem);

    let Some(paths) = spec["paths"].as_object().filter(|p| !p.is_empty()) else {
        problem("`paths` is missing or empty".into());
        return problems;
    };
    let mut operation_ids = BTreeSet::new();
    for (path, item) in paths {
        if !path.starts_with('/') {
            problem(format!("path `{path}` does not start with /"));
        }
        for key in item.as_object().into_iter().flat_map(|m| m.keys()) {
            let allowed = ["parameters", "summary", "description", "servers", "$ref"];
            if !OPERATION_KEYS.contains(&key.as_str()) && !allowed.contains(&key.as_str()) {
                problem(format!("{path}: unknown key `{key}` in a path item"));
            }
        }
    }
    for ((method, path), op) in spec_operations(spec) {
        let at = format!("{method} {path}");
        match op["responses"].as_object() {
            Some(responses) if !responses.is_empty() => {
                for (status, resp) in responses {
                    let valid = status == "default"
                        || (status.len() == 3
                            && status.parse::<u16>().is_ok_and(|s| (100..600).contains(&s)));
                    if !valid {
                        problem(format!(
                            "{at}: response key `{status}` is not a status code"
                        ));
                    }
                    let resp = deref(spec, resp).unwrap_or(resp);
                    if !resp["description"].is_string() {
                        problem(format!("{at}: response {status} has no description"));
                    }
                }
            }
            _ => problem(format!("{at}: no `responses`")),
        }
        if let Some(id) = op["operationId"].as_str() {
            if !operation_ids.insert(id.to_string()) {
                problem(format!("{at}: operationId `{id}` is used twice"));
            }
        }
        check_security(&at, &op["security"], &mut problem);

        let params = parameters(spec, &path, op);
        let in_path: BTreeSet<String> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap_or("").to_string())
            .collect();
        let templated: BTreeSet<String> = template_params(&path).into_iter().collect();
        if in_path != templated {
            problem(format!(
                "{at}: path parameters {in_path:?} do not match the template's {templated:?}"
            ));
        }
        for p in params.iter().filter(|p| p["in"] == "path") {
            if p["required"] != true || p["example"].is_null() {
                problem(format!(
                    "{at}: path parameter {} needs `required: true` and an `example` (the live check uses it)",
                    p["name"]
                ));
            }
        }
        // extract.rs: every state-changing /auth/api/ call must send X-CSRF-Token.
        let csrf = params.iter().any(|p| {
            p["in"] == "header"
                && p["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("x-csrf-token"))
                && p["required"] == true
        });
        let mutating = !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS");
        if path.starts_with("/auth/api/") && mutating != csrf {
            problem(format!(
                "{at}: a required X-CSRF-Token header parameter must be documented exactly on state-changing /auth/api/ calls"
            ));
        }
    }

    let mut refs = Vec::new();
    collect_refs(spec, String::new(), &mut refs);
    if refs.len() < 20 {
        problem(format!(
            "only {} `$ref`s found; the walk is broken",
            refs.len()
        ));
    }
    for (at, r) in refs {
        let resolved = r
            .strip_prefix('#')
            .filter(|p| p.starts_with('/'))
            .and_then(|p| spec.pointer(p));
        if resolved.is_none() {
            problem(format!(
                "{at}: `$ref: {r}` does not resolve within the document"
            ));
        }
    }
    problems
}

// --- error codes in the source -----------------------------------------------------------------

/// The files of the modules `src/account/mod.rs` declares (`mod name;`): the app's code.
fn account_module_sources() -> Vec<(String, String)> {
    let toks = lex(&read(ROUTER_FILE));
    let mut out = Vec::new();
    for w in toks.windows(3) {
        if let (true, Tok::Ident(name), true) = (
            is_ident(Some(&w[0]), "mod"),
            &w[1],
            is_punct(Some(&w[2]), ';'),
        ) {
            let file = format!("src/account/{name}.rs");
            out.push((file.clone(), read(&file)));
        }
    }
    out
}

/// The `error` codes a handler can send: `bad_request("code"`, `forbidden("code"`,
/// `code: "code"` (the `ApiError` variants with a code field) and, in `error.rs`, the fixed
/// codes written next to their status (`StatusCode::X, "code"`).
fn handler_error_codes(src: &str) -> BTreeSet<String> {
    let toks = lex(src);
    let mut out = BTreeSet::new();
    for (i, t) in toks.iter().enumerate() {
        let code = match t {
            Tok::Ident(w)
                if (w == "bad_request" || w == "forbidden") && is_punct(toks.get(i + 1), '(') =>
            {
                toks.get(i + 2)
            }
            Tok::Ident(w)
                if w == "code"
                    && is_punct(toks.get(i + 1), ':')
                    && !is_punct(toks.get(i + 2), ':') =>
            {
                toks.get(i + 2)
            }
            Tok::Ident(w)
                if w == "StatusCode"
                    && is_punct(toks.get(i + 1), ':')
                    && is_punct(toks.get(i + 2), ':')
                    && is_punct(toks.get(i + 4), ',') =>
            {
                toks.get(i + 5)
            }
            _ => None,
        };
        if let Some(Tok::Str(code)) = code {
            out.insert(code.clone());
        }
    }
    out
}

/// Every string literal in the Rust files under `CODE_SOURCES`.
fn source_string_literals() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for rel in CODE_SOURCES {
        let path = root.join(rel);
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                let p = entry.unwrap().path();
                if p.extension().is_some_and(|e| e == "rs") {
                    files.push(p);
                }
            }
        } else {
            files.push(path);
        }
    }
    let mut out = BTreeSet::new();
    for f in files {
        for t in lex(&std::fs::read_to_string(&f).unwrap()) {
            if let Tok::Str(s) = t {
                out.insert(s);
            }
        }
    }
    out
}

// --- the tests -----------------------------------------------------------------------------

fn show(set: &BTreeSet<(String, String)>) -> String {
    set.iter()
        .map(|(m, p)| format!("\n  {m} {p}"))
        .collect::<String>()
}

#[test]
fn the_spec_describes_exactly_the_routes_the_router_registers() {
    let routed = router_routes();
    assert!(
        routed.len() > 20,
        "only {} routes parsed from {ROUTER_FILE}: the parser is broken",
        routed.len()
    );
    let spec = spec();
    let documented: BTreeSet<(String, String)> = spec_operations(&spec).into_keys().collect();
    assert!(
        documented.len() > 20,
        "only {} operations in {SPEC_FILE}",
        documented.len()
    );
    let undocumented: BTreeSet<_> = routed.difference(&documented).cloned().collect();
    let unrouted: BTreeSet<_> = documented.difference(&routed).cloned().collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "{SPEC_FILE} and {ROUTER_FILE} disagree.\nRegistered but not documented:{}\nDocumented but not registered:{}",
        show(&undocumented),
        show(&unrouted)
    );
}

#[test]
fn the_spec_is_structurally_valid_openapi_3_1() {
    let problems = structural_problems(&spec());
    assert!(
        problems.is_empty(),
        "{SPEC_FILE}:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_spec_lists_every_error_code_the_handlers_return_and_no_other() {
    let mut documented = BTreeSet::new();
    spec_error_codes(&spec(), &mut documented);
    let modules = account_module_sources();
    assert!(
        modules.len() >= 10,
        "only {} account modules found",
        modules.len()
    );
    let mut returned = BTreeSet::new();
    for (_, src) in &modules {
        returned.extend(handler_error_codes(src));
    }
    assert!(
        returned.len() > 20,
        "only {} codes found in the handlers: {returned:?}",
        returned.len()
    );
    for code in UNDOCUMENTED_CODES {
        assert!(
            returned.remove(*code),
            "UNDOCUMENTED_CODES lists `{code}`, which no handler returns"
        );
    }
    let missing: Vec<_> = returned.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "codes the handlers return but {SPEC_FILE} does not list: {missing:?}"
    );
    let literals = source_string_literals();
    let invented: Vec<_> = documented
        .iter()
        .filter(|c| !literals.contains(*c))
        .collect();
    assert!(
        invented.is_empty(),
        "codes {SPEC_FILE} lists that appear nowhere in the source: {invented:?}"
    );
}

/// The parser on a router written every way it must understand — and refusing what it must
/// not guess at — so the drift test cannot pass because the parser silently read nothing.
#[test]
fn the_route_parser_reads_every_form_and_refuses_the_unknown() {
    let src = r#"
        const AVATAR: &str = "/x/avatar";
        // .route("/commented-out", get(nothing))
        fn router(state: AppState) -> Router {
            Router::new()
                .route("/a", get(h::a).post(h::b))
                /* .route("/block", get(x)) */
                .route(
                    AVATAR,
                    put(h::up)
                        // a comment inside the chain, "with a string"
                        .delete(h::rm)
                        .layer(DefaultBodyLimit::max(limit(AVATAR, '(', '\'', "//)"))),
                )
                .route("/b/{id}", axum::routing::delete(h::del))
                .route("/c", routing::patch(h::c).get(|| async { "}" }),)
                .fallback(ui::not_found)
        }
    "#;
    let consts = string_consts(&[src.to_string()]);
    let got: BTreeSet<(String, String)> = parse_router(src, &consts).into_iter().collect();
    let want: BTreeSet<(String, String)> = [
        ("GET", "/a"),
        ("POST", "/a"),
        ("PUT", "/x/avatar"),
        ("DELETE", "/x/avatar"),
        ("DELETE", "/b/{id}"),
        ("PATCH", "/c"),
        ("GET", "/c"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(got, want);

    for bad in [
        r#"fn router() { Router::new().route("/a", any(h)) }"#,
        r#"fn router() { Router::new().route("/a", get(h).on(MethodFilter::PUT, h)) }"#,
        r#"fn router() { Router::new().route(UNKNOWN_CONST, get(h)) }"#,
        r#"fn router() { Router::new().nest("/n", other()) }"#,
        r#"fn router() { Router::new() } fn more(r: Router) -> Router { r.route("/b", get(h)) }"#,
    ] {
        let refused = std::panic::catch_unwind(|| parse_router(bad, &BTreeMap::new())).is_err();
        assert!(refused, "the parser should refuse: {bad}");
    }
}

/// A documented operation answers something the spec lists for it, never the router's
/// 404/405 fallback; any other common method on a documented path is the router's 405. No
/// credentials are sent: the app answers 401 before looking at ids or bodies, so the
/// examples' ids need not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_gateway_serves_every_documented_operation_and_no_other_method() {
    let gw = TestGateway::start().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let spec = spec();
    let operations = spec_operations(&spec);
    assert!(operations.len() > 20);

    let call = |method: &str, path: &str| {
        client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                gw.url(path),
            )
            .header("Accept", "application/json")
            .send()
    };
    async fn status_and_code(resp: reqwest::Response) -> (u16, String) {
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        (status, body["error"].as_str().unwrap_or("").to_string())
    }

    // The fallbacks look as assumed.
    let (status, code) =
        status_and_code(call("GET", "/auth/api/v1/no-such-route").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code) =
        status_and_code(call("DELETE", "/auth/.well-known/jwks.json").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));

    let mut failures = Vec::new();
    let paths: BTreeSet<&String> = operations.keys().map(|(_, p)| p).collect();
    for path in paths {
        // Fill the template from the parameters' examples.
        let mut concrete = path.clone();
        for (method, p) in operations.keys() {
            if p != path {
                continue;
            }
            for param in parameters(&spec, path, operations[&(method.clone(), p.clone())]) {
                if param["in"] == "path" {
                    let name = param["name"].as_str().unwrap();
                    let example = param["example"]
                        .as_str()
                        .expect("path parameters have an example");
                    concrete = concrete.replace(&format!("{{{name}}}"), example);
                }
            }
        }
        assert!(
            !concrete.contains('{'),
            "{path}: a path parameter without an example"
        );

        for method in PROBED_METHODS {
            let (status, code) = status_and_code(call(method, &concrete).await.unwrap()).await;
            let key = (method.to_string(), path.clone());
            match operations.get(&key) {
                Some(op) => {
                    let listed = op["responses"].get(status.to_string()).is_some();
                    if matches!(status, 404 | 405) || !listed {
                        failures.push(format!(
                            "{method} {concrete}: {status} {code} (documented: {:?})",
                            op["responses"]
                                .as_object()
                                .map(|r| r.keys().collect::<Vec<_>>())
                        ));
                    }
                }
                None if (status, code.as_str()) != (405, "method_not_allowed") => {
                    failures.push(format!(
                        "{method} {concrete}: undocumented, so it should be 405 method_not_allowed, got {status} {code}"
                    ));
                }
                None => {}
            }
        }
    }
    assert!(failures.is_empty(), "\n  {}", failures.join("\n  "));
}
