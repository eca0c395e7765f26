//! The browser shell in headless Chromium (wasm-bindgen-test). `fetch` is a
//! scripted stub (tests/support/stub.js) that records every request;
//! timers, AbortController, BroadcastChannel and Web Locks are the real ones.
#![cfg(target_arch = "wasm32")]

use std::rc::Rc;

use js_sys::{Array, Function, Promise, Reflect, JSON};
use tokenwarden::client::TokenClient;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen(module = "/tests/support/stub.js")]
extern "C" {
    /// Replaces `globalThis.fetch`; returns the live request log.
    #[wasm_bindgen(js_name = stubFetch)]
    fn stub_fetch(routes: &JsValue) -> Array;
    /// Replaces the route table of the installed stub.
    #[wasm_bindgen(js_name = setRoutes)]
    fn set_routes(routes: &JsValue);
    /// Counts requests in `log` whose path is `path`.
    #[wasm_bindgen(js_name = count)]
    fn count(log: &Array, path: &str) -> u32;
    /// The Authorization headers sent to `path`, in order.
    #[wasm_bindgen(js_name = authsFor)]
    fn auths_for(log: &Array, path: &str) -> Array;
    /// Instruments every persistent storage API; returns a report function.
    #[wasm_bindgen(js_name = spyStorage)]
    fn spy_storage() -> Function;
    /// An unsigned JWT with `payload`.
    #[wasm_bindgen(js_name = makeJwt)]
    fn make_jwt(payload: &JsValue) -> String;
}

/// A listener that pushes every event but `stateChanged` into `into`.
fn pusher(into: &Array) -> Function {
    let make = Function::new_with_args(
        "arr",
        "return (e) => { if (e.type !== 'stateChanged') arr.push(e); }",
    );
    make.call1(&JsValue::UNDEFINED, into)
        .expect("pusher")
        .unchecked_into()
}

/// Collects the client's events into an array.
fn collect(client: &TokenClient) -> Array {
    let events = Array::new();
    client.subscribe(pusher(&events).into()).expect("subscribe");
    events
}

fn js(json: &str) -> JsValue {
    JSON::parse(json).expect("test JSON")
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn code(err: &JsValue) -> String {
    get(err, "code").as_string().unwrap_or_default()
}

async fn ok(p: Promise) -> JsValue {
    JsFuture::from(p).await.expect("promise should resolve")
}

async fn err(p: Promise) -> JsValue {
    JsFuture::from(p).await.expect_err("promise should reject")
}

/// Resolves with the `n`-th event of type `kind` that `client` emits from
/// now on: tests wait for what the client does, never for time to pass.
fn until(client: &TokenClient, kind: &str, n: u32) -> Promise {
    let make = Function::new_with_args(
        "kind,n,resolve",
        "let seen = 0; return (e) => { if (e.type === kind && ++seen === n) resolve(e); }",
    );
    let mut listener = JsValue::UNDEFINED;
    let p = Promise::new(&mut |resolve, _| {
        listener = make
            .call3(&JsValue::UNDEFINED, &kind.into(), &n.into(), &resolve)
            .expect("listener");
    });
    client.subscribe(listener).expect("subscribe");
    p
}

fn client(extra: &str) -> TokenClient {
    let opts = String::from(
        r#"{"refreshUrl":"/auth/refresh","logoutUrl":"/auth/logout","crossTab":false"#,
    ) + extra
        + "}";
    TokenClient::new(js(&opts)).expect("valid options")
}

fn event_types(events: &Array) -> Vec<String> {
    events
        .iter()
        .map(|e| get(&e, "type").as_string().unwrap_or_default())
        .collect()
}

/// A refresh route that mints `tok-1`, `tok-2`, … living `secs` seconds.
fn minting(secs: u32) -> String {
    String::from(r#"[{"mint":"#) + &secs.to_string() + "}]"
}

#[wasm_bindgen_test]
async fn bearer_goes_only_to_allowed_origins_and_never_overrides_the_callers_header() {
    let log = stub_fetch(&js(r#"{"*":[{"status":200,"body":"ok"}]}"#));
    let c = client(r#","allowedOrigins":["https://api.example.com","http://127.0.0.1:1"]"#);
    c.set_session(js(
        r#"{"access_token":"tok-A","token_type":"Bearer","expires_in":3600}"#,
    ))
    .unwrap();
    for url in [
        "https://api.example.com/v1/me",
        "https://evil.example.com/steal",
        "http://api.example.com/v1/me",
        "https://api.example.com:8443/v1/me",
        "https://api.example.com.evil.com/v1/me",
        "http://127.0.0.1:1/x",
        "/same-origin-but-not-listed",
    ] {
        ok(c.fetch(JsValue::from_str(url), JsValue::UNDEFINED)).await;
    }
    ok(c.fetch(
        js(r#""https://api.example.com/explicit""#),
        js(r#"{"headers":{"Authorization":"Basic dXNlcg=="}}"#),
    ))
    .await;
    let sent: Vec<(String, JsValue)> = log
        .iter()
        .map(|e| (get(&e, "url").as_string().unwrap(), get(&e, "auth")))
        .collect();
    let auth = |needle: &str| {
        sent.iter()
            .find(|(u, _)| u.contains(needle))
            .map(|(_, a)| a.as_string())
            .unwrap()
    };
    assert_eq!(
        auth("api.example.com/v1/me").as_deref(),
        Some("Bearer tok-A")
    );
    assert_eq!(auth("evil.example.com"), None);
    assert_eq!(
        auth("http://api.example.com"),
        None,
        "another scheme is another origin"
    );
    assert_eq!(auth(":8443"), None, "another port is another origin");
    assert_eq!(auth("api.example.com.evil.com"), None);
    assert_eq!(auth("127.0.0.1:1").as_deref(), Some("Bearer tok-A"));
    assert_eq!(
        auth("same-origin-but-not-listed"),
        None,
        "an explicit allow-list replaces the page origin"
    );
    assert_eq!(
        auth("explicit").as_deref(),
        Some("Basic dXNlcg=="),
        "the caller's Authorization is kept"
    );
    c.dispose();
}

#[wasm_bindgen_test]
async fn fetch_accepts_strings_urls_and_requests_and_keeps_method_and_body() {
    let log = stub_fetch(&js(r#"{"*":[{"status":200,"body":"ok"}]}"#));
    let c = client("");
    c.set_session(js(r#"{"access_token":"tok-A","expires_in":3600}"#))
        .unwrap();
    let url = web_sys::Url::new_with_base(
        "/api/url",
        &get(&get(&js_sys::global(), "location"), "href")
            .as_string()
            .unwrap(),
    )
    .unwrap();
    ok(c.fetch(url.into(), JsValue::UNDEFINED)).await;
    let req = web_sys::Request::new_with_str("/api/request").unwrap();
    ok(c.fetch(req.into(), JsValue::UNDEFINED)).await;
    ok(c.fetch(
        JsValue::from_str("/api/post"),
        js(r#"{"method":"POST","body":"{\"a\":1}"}"#),
    ))
    .await;
    assert_eq!(
        auths_for(&log, "/api/url").get(0).as_string().as_deref(),
        Some("Bearer tok-A")
    );
    assert_eq!(
        auths_for(&log, "/api/request")
            .get(0)
            .as_string()
            .as_deref(),
        Some("Bearer tok-A")
    );
    let post = log
        .iter()
        .find(|e| get(e, "path").as_string().as_deref() == Some("/api/post"))
        .unwrap();
    assert_eq!(get(&post, "method").as_string().as_deref(), Some("POST"));
    assert_eq!(get(&post, "body").as_string().as_deref(), Some("{\"a\":1}"));
    c.dispose();
}

#[wasm_bindgen_test]
async fn twenty_concurrent_get_token_calls_when_due_share_one_refresh() {
    let routes = String::from(r#"{"/auth/refresh":[{"delayMs":100,"mint":3600}]}"#);
    let log = stub_fetch(&js(&routes));
    let c = client("");
    // Signed out and restoring: every caller waits for the same refresh.
    let start = c.start();
    let calls: Vec<Promise> = (0..20).map(|_| c.get_token()).collect();
    for p in calls {
        assert_eq!(ok(p).await.as_string().as_deref(), Some("tok-1"));
    }
    assert_eq!(ok(start).await, JsValue::TRUE);
    assert_eq!(count(&log, "/auth/refresh"), 1);
    // Due (1.2 s token, half-life rule): once the timer's refresh is in
    // flight, twenty callers again, one refresh.
    let refreshing = until(&c, "stateChanged", 1);
    c.set_session(js(r#"{"access_token":"tok-short","expires_in":1.2}"#))
        .unwrap();
    let changed = ok(refreshing).await;
    assert_eq!(
        get(&changed, "state").as_string().as_deref(),
        Some("refreshing")
    );
    assert_eq!(c.state(), "refreshing");
    let calls: Vec<Promise> = (0..20).map(|_| c.get_token()).collect();
    for p in calls {
        assert_eq!(ok(p).await.as_string().as_deref(), Some("tok-2"));
    }
    assert_eq!(count(&log, "/auth/refresh"), 2);
    c.dispose();
}

#[wasm_bindgen_test]
async fn a_401_leads_to_one_refresh_and_one_replay_with_the_new_token() {
    let routes = String::from(
        r#"{"/api/data":[{"status":401},{"status":200,"body":"fine"}],"/auth/refresh":"#,
    ) + &minting(3600)
        + "}";
    let log = stub_fetch(&js(&routes));
    let c = client("");
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    let res = ok(c.fetch(
        JsValue::from_str("/api/data"),
        js(r#"{"method":"PUT","body":"payload"}"#),
    ))
    .await;
    assert_eq!(get(&res, "status").as_f64(), Some(200.0));
    let auths: Vec<String> = auths_for(&log, "/api/data")
        .iter()
        .filter_map(|a| a.as_string())
        .collect();
    assert_eq!(auths, ["Bearer tok-0", "Bearer tok-1"]);
    assert_eq!(count(&log, "/auth/refresh"), 1);
    let replayed = log
        .iter()
        .rfind(|e| get(e, "path").as_string().as_deref() == Some("/api/data"))
        .unwrap();
    assert_eq!(
        get(&replayed, "body").as_string().as_deref(),
        Some("payload"),
        "the replay carries the body again"
    );
    c.dispose();
}

#[wasm_bindgen_test]
async fn a_second_401_is_returned_to_the_caller_as_is() {
    let routes = String::from(r#"{"/api/data":[{"status":401,"body":"nope"}],"/auth/refresh":"#)
        + &minting(3600)
        + "}";
    let log = stub_fetch(&js(&routes));
    let c = client("");
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    let res = ok(c.fetch(JsValue::from_str("/api/data"), JsValue::UNDEFINED)).await;
    assert_eq!(get(&res, "status").as_f64(), Some(401.0));
    assert_eq!(count(&log, "/api/data"), 2, "one replay, no more");
    assert_eq!(count(&log, "/auth/refresh"), 1);
    c.dispose();
}

#[wasm_bindgen_test]
async fn a_rejected_refresh_signs_out_and_rejects_with_refresh_rejected() {
    let log = stub_fetch(&js(
        r#"{"/auth/refresh":[{"status":401,"body":"{\"error\":\"invalid_grant\"}"}]}"#,
    ));
    let c = client("");
    let events = collect(&c);
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    let e = err(c.refresh()).await;
    assert_eq!(code(&e), "refresh_rejected");
    assert_eq!(get(&e, "status").as_f64(), Some(401.0));
    assert_eq!(
        get(&e, "error").as_string().as_deref(),
        Some("invalid_grant")
    );
    assert_eq!(
        get(&e, "name").as_string().as_deref(),
        Some("TokenClientError")
    );
    assert!(e.is_instance_of::<js_sys::Error>());
    assert_eq!(c.state(), "signedOut");
    assert_eq!(event_types(&events), ["signedIn", "signedOut"]);
    assert_eq!(
        get(&events.get(1), "reason").as_string().as_deref(),
        Some("rejected")
    );
    assert_eq!(ok(c.get_token()).await, JsValue::NULL);
    assert_eq!(count(&log, "/auth/refresh"), 1);
    c.dispose();
}

#[wasm_bindgen_test]
async fn each_malformed_refresh_body_is_invalid_response_and_the_client_recovers() {
    let not_jwt = r#""{\"access_token\":\"a.b.c\"}""#;
    let bodies = [
        r#""<!doctype html><title>502</title>""#,
        r#""{\"access_token\":\"ab""#,
        r#""""#,
        r#""{\"token_type\":\"Bearer\",\"expires_in\":60}""#,
        r#""{\"access_token\":\"t\",\"token_type\":\"mac\"}""#,
        r#""{\"access_token\":\"t\",\"expires_in\":0}""#,
        not_jwt,
    ];
    for body in bodies {
        let routes = String::from(r#"{"/auth/refresh":[{"status":200,"body":"#) + body + "}]}";
        let log = stub_fetch(&js(&routes));
        let c = client("");
        let events = collect(&c);
        c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
            .unwrap();
        let e = err(c.refresh()).await;
        assert_eq!(code(&e), "invalid_response", "{body}");
        assert_eq!(c.state(), "refreshing", "{body}: retries follow");
        assert_eq!(event_types(&events), ["signedIn", "refreshFailed"]);
        assert!(get(&events.get(1), "retryInMs").as_f64().unwrap() >= 1000.0);
        // The still-valid token keeps working while retries go on.
        assert_eq!(
            ok(c.get_token()).await.as_string().as_deref(),
            Some("tok-0")
        );
        set_routes(&js(&(String::from(r#"{"/auth/refresh":"#)
            + &minting(3600)
            + "}")));
        assert_eq!(
            ok(c.refresh()).await.as_string().as_deref(),
            Some("tok-1"),
            "{body}: recovers"
        );
        assert_eq!(c.state(), "active");
        assert_eq!(count(&log, "/auth/refresh"), 2);
        c.dispose();
    }
}

#[wasm_bindgen_test]
async fn server_errors_are_transient_and_retry_after_is_honoured() {
    let log = stub_fetch(&js(
        r#"{"/auth/refresh":[{"status":429,"headers":{"Retry-After":"3"}},{"status":503}]}"#,
    ));
    let c = client("");
    let events = collect(&c);
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    let e = err(c.refresh()).await;
    assert_eq!(code(&e), "server_error");
    assert_eq!(get(&e, "status").as_f64(), Some(429.0));
    assert_eq!(get(&events.get(1), "retryInMs").as_f64(), Some(3000.0));
    assert_eq!(count(&log, "/auth/refresh"), 1);
    c.dispose();
}

#[wasm_bindgen_test]
async fn a_set_session_inside_a_signed_out_listener_leaves_no_stale_state_changed() {
    let log = stub_fetch(&js(r#"{"/auth/logout":[{"status":204}]}"#));
    let c = Rc::new(client(""));
    // Every event as "type" or "stateChanged:state", in order.
    let seen = Array::new();
    let all = Function::new_with_args(
        "arr",
        "return (e) => arr.push(e.type === 'stateChanged' ? 'stateChanged:' + e.state : e.type);",
    )
    .call1(&JsValue::UNDEFINED, &seen)
    .unwrap();
    c.subscribe(all).unwrap();
    let inner = c.clone();
    // `Fn`, not `FnMut`: the listener is called again from inside its own call.
    let again = Closure::<dyn Fn(JsValue)>::new(move |e: JsValue| {
        if get(&e, "type").as_string().as_deref() == Some("signedOut") {
            inner
                .set_session(js(r#"{"access_token":"tok-1","expires_in":3600}"#))
                .unwrap();
        }
    });
    c.subscribe(again.as_ref().clone()).unwrap();
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    ok(c.logout()).await;
    assert_eq!(count(&log, "/auth/logout"), 1);
    assert_eq!(c.state(), "active");
    let seen: Vec<String> = seen.iter().filter_map(|e| e.as_string()).collect();
    // Before, a stale "stateChanged:signedOut" came last: the logout's own, emitted after the
    // events of the session set inside the listener.
    assert_eq!(
        seen,
        [
            "signedIn",
            "stateChanged:active",
            "signedOut",
            "signedIn",
            "stateChanged:active"
        ],
    );
    c.dispose();
    drop(again);
}

#[wasm_bindgen_test]
async fn without_broadcast_channel_the_client_works_within_its_tab() {
    // API.md: where BroadcastChannel is missing, the client still works within its tab.
    // Before, the constructor threw a TypeError (a null channel closed).
    let hide = Function::new_no_args(
        "const bc = globalThis.BroadcastChannel; delete globalThis.BroadcastChannel; \
         return () => { globalThis.BroadcastChannel = bc; };",
    )
    .call0(&JsValue::UNDEFINED)
    .unwrap()
    .unchecked_into::<Function>();
    let made = TokenClient::new(js(r#"{"refreshUrl":"/auth/refresh"}"#));
    hide.call0(&JsValue::UNDEFINED).unwrap();
    let c = made.expect("a client without cross-tab");
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    assert_eq!(
        ok(c.get_token()).await.as_string().as_deref(),
        Some("tok-0")
    );
    c.dispose();
}

#[wasm_bindgen_test]
fn dpop_without_webcrypto_is_unsupported_environment_at_construction() {
    // An insecure context has no `crypto.subtle`. Before, construction succeeded and the
    // first refresh ended as `signedOut: rejected` ("needs a browser window").
    let opts = r#"{"refreshUrl":"/auth/refresh","dpop":true,"crossTab":false}"#;
    let hide = Function::new_no_args(
        "Object.defineProperty(globalThis.crypto, 'subtle', \
           { value: undefined, configurable: true }); \
         return () => { delete globalThis.crypto.subtle; };",
    )
    .call0(&JsValue::UNDEFINED)
    .unwrap()
    .unchecked_into::<Function>();
    let hidden = Function::new_no_args("return globalThis.crypto.subtle === undefined;")
        .call0(&JsValue::UNDEFINED)
        .unwrap();
    let made = TokenClient::new(js(opts));
    hide.call0(&JsValue::UNDEFINED).unwrap();
    assert_eq!(hidden.as_bool(), Some(true), "crypto.subtle was hidden");
    let e = made.err().expect("no client without WebCrypto");
    assert_eq!(code(&e), "unsupported_environment");
    let message = get(&e, "message").as_string().unwrap_or_default();
    assert!(message.contains("WebCrypto"), "{message}");
    // With it back (this page is a secure context), the same options make a client.
    TokenClient::new(js(opts))
        .expect("a DPoP client with WebCrypto")
        .dispose();
}

#[wasm_bindgen_test]
async fn authorize_resolves_a_relative_url_against_the_document_base_as_fetch_does() {
    let c = client("");
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    let h = ok(c.authorize("GET".into(), JsValue::from_str("api/me"))).await;
    assert_eq!(
        get(&h, "Authorization").as_string().as_deref(),
        Some("Bearer tok-0")
    );
    // A <base> on another origin: fetch and XHR send "api/me" there, so no header (before,
    // authorize resolved it against location.href and gave the token for the CDN).
    let base = Function::new_no_args(
        "const b = document.createElement('base'); b.href = 'https://cdn.example/app/'; \
         document.head.append(b); return b;",
    )
    .call0(&JsValue::UNDEFINED)
    .unwrap();
    let h = ok(c.authorize("GET".into(), JsValue::from_str("api/me"))).await;
    Reflect::get(&base, &"remove".into())
        .unwrap()
        .unchecked_into::<Function>()
        .call0(&base)
        .unwrap();
    assert!(h.is_null(), "no header for https://cdn.example");
    c.dispose();
}

#[wasm_bindgen_test]
async fn an_http_date_retry_after_is_read_against_the_responses_date_header() {
    // The server's clock says 1994 (the page's says now): the date it gives in
    // `Retry-After` is 3 s after its own `Date`, so the wait is 3 s. Read
    // against the page's clock it would be in the past: the 1 s minimum.
    let log = stub_fetch(&js(
        r#"{"/auth/refresh":[{"status":503,"headers":{"Retry-After":"Sun, 06 Nov 1994 08:49:40 GMT","Date":"Sun, 06 Nov 1994 08:49:37 GMT"}}]}"#,
    ));
    let c = client("");
    let events = collect(&c);
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    let e = err(c.refresh()).await;
    assert_eq!(code(&e), "server_error");
    assert_eq!(get(&events.get(1), "retryInMs").as_f64(), Some(3000.0));
    assert_eq!(count(&log, "/auth/refresh"), 1);
    c.dispose();
}

#[wasm_bindgen_test]
async fn an_expired_token_is_never_sent_fetch_rejects_while_retries_go_on() {
    let log = stub_fetch(&js(
        r#"{"/auth/refresh":[{"status":503,"delayMs":20}],"/api/data":[{"status":200}]}"#,
    ));
    let c = client("");
    let failed = until(&c, "refreshFailed", 1);
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":0.01}"#))
        .unwrap();
    // The refresh at 5 ms fails after the server's 20 ms: by then the 10 ms
    // token has expired, and the next attempt is >= 1 s away.
    ok(failed).await;
    assert_eq!(c.state(), "refreshing");
    let e = err(c.fetch(JsValue::from_str("/api/data"), JsValue::UNDEFINED)).await;
    assert_eq!(code(&e), "server_error");
    assert_eq!(code(&err(c.get_token()).await), "server_error");
    assert_eq!(
        count(&log, "/api/data"),
        0,
        "nothing went out with an expired token or without one"
    );
    c.dispose();
}

#[wasm_bindgen_test]
async fn when_retries_are_exhausted_the_session_expires_and_requests_go_out_bare() {
    let log = stub_fetch(&js(
        r#"{"/auth/refresh":[{"status":503,"delayMs":20}],"/api/data":[{"status":200}]}"#,
    ));
    let c = client(r#","retry":{"maxAttempts":1}"#);
    let events = collect(&c);
    let signed_out = until(&c, "signedOut", 1);
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":0.01}"#))
        .unwrap();
    ok(signed_out).await;
    assert_eq!(c.state(), "signedOut");
    assert_eq!(
        event_types(&events),
        ["signedIn", "refreshFailed", "signedOut"]
    );
    assert_eq!(
        get(&events.get(1), "retryInMs"),
        JsValue::NULL,
        "no retry follows"
    );
    assert_eq!(
        get(&events.get(2), "reason").as_string().as_deref(),
        Some("expired")
    );
    ok(c.fetch(JsValue::from_str("/api/data"), JsValue::UNDEFINED)).await;
    assert_eq!(auths_for(&log, "/api/data").get(0), JsValue::NULL);
    c.dispose();
}

#[wasm_bindgen_test]
async fn a_hung_refresh_times_out_with_timeout() {
    stub_fetch(&js(r#"{"/auth/refresh":[{"hang":true}]}"#));
    let c = client(r#","requestTimeoutMs":200"#);
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    let e = err(c.refresh()).await;
    assert_eq!(code(&e), "timeout");
    c.dispose();
}

/// A tab that holds the refresh lock and never lets go (frozen or hung):
/// the client waits as long as the policy says (js/shell.js's `lock` with a
/// timeout signal), then steals the lock and refreshes once.
#[wasm_bindgen_test]
async fn a_lock_held_by_a_hung_tab_is_waited_for_then_stolen() {
    let log = stub_fetch(&js(&(String::from(r#"{"/auth/refresh":"#)
        + &minting(3600)
        + "}")));
    let hold = Function::new_no_args(
        "const held = { lost: '' }; \
         navigator.locks.request('tw-hung', () => new Promise(() => {})) \
           .catch((e) => { held.lost = e.name; }); \
         return held;",
    );
    let held = hold.call0(&JsValue::UNDEFINED).expect("hold the lock");
    let c = TokenClient::new(js(
        r#"{"refreshUrl":"/auth/refresh","channelName":"tw-hung","requestTimeoutMs":200}"#,
    ))
    .expect("valid options");
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    let t = ok(c.refresh()).await;
    assert_eq!(t.as_string().as_deref(), Some("tok-1"));
    assert_eq!(count(&log, "/auth/refresh"), 1);
    assert_eq!(
        get(&held, "lost").as_string().as_deref(),
        Some("AbortError"),
        "the hung holder lost the lock to the steal"
    );
    c.dispose();
}

#[wasm_bindgen_test]
async fn network_failures_of_the_refresh_are_network_errors() {
    stub_fetch(&js(r#"{"/auth/refresh":[{"networkError":true}]}"#));
    let c = client("");
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    assert_eq!(code(&err(c.refresh()).await), "network");
    c.dispose();
}

#[wasm_bindgen_test]
async fn dispose_stops_timers_and_later_calls_reject_with_disposed() {
    let log = stub_fetch(&js(&(String::from(r#"{"/auth/refresh":"#)
        + &minting(60)
        + "}")));
    let c = client("");
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":0.6}"#))
        .unwrap();
    c.dispose();
    // A second client with the same token, armed after the first: when its
    // timer has fired and refreshed, the first one's would have too.
    let witness = client("");
    let refreshed = until(&witness, "refreshed", 1);
    witness
        .set_session(js(r#"{"access_token":"tok-w","expires_in":0.6}"#))
        .unwrap();
    ok(refreshed).await;
    witness.dispose();
    assert_eq!(
        count(&log, "/auth/refresh"),
        1,
        "only the witness refreshed"
    );
    assert_eq!(code(&err(c.get_token()).await), "disposed");
    assert_eq!(code(&err(c.refresh()).await), "disposed");
    assert_eq!(
        code(&err(c.fetch(JsValue::from_str("/x"), JsValue::UNDEFINED)).await),
        "disposed"
    );
    assert_eq!(
        code(&c.set_session(js(r#"{"access_token":"t"}"#)).unwrap_err()),
        "disposed"
    );
    // The token left memory with the client: the getters agree with `state`.
    let d = client("");
    let jwt = make_jwt(&js(r#"{"sub":"u1","scope":"admin"}"#));
    let response = String::from(r#"{"access_token":""#) + &jwt + r#"","expires_in":60}"#;
    d.set_session(js(&response)).unwrap();
    assert_eq!(get(&d.claims(), "sub").as_string().as_deref(), Some("u1"));
    d.dispose();
    assert_eq!(d.state(), "signedOut");
    assert!(d.claims().is_undefined());
    assert!(!d.has_scope(JsValue::from_str("admin")));
    assert!(d.expires_at().is_undefined());
    assert!(d.refresh_at().is_undefined());
}

/// `login()`'s decision (the entry performs the navigation, js/index.js):
/// where it goes, and its typed errors.
#[wasm_bindgen_test]
fn login_target_adds_return_to_and_refuses_without_login_url_or_after_dispose() {
    let origin = get(&get(&js_sys::global(), "location"), "origin")
        .as_string()
        .unwrap();
    let c = client(r#","loginUrl":"/auth/login""#);
    assert_eq!(
        c.login_target(String::from("/app?tab=2&x=é")).unwrap(),
        origin.clone() + "/auth/login?returnTo=%2Fapp%3Ftab%3D2%26x%3D%C3%A9"
    );
    let q = client(r#","loginUrl":"/auth/login?prompt=login""#);
    assert_eq!(
        q.login_target(String::from("https://app.example/"))
            .unwrap(),
        origin + "/auth/login?prompt=login&returnTo=https%3A%2F%2Fapp.example%2F"
    );
    let e = client("").login_target(String::from("/")).unwrap_err();
    assert_eq!(code(&e), "invalid_options");
    c.dispose();
    assert_eq!(
        code(&c.login_target(String::from("/")).unwrap_err()),
        "disposed"
    );
    q.dispose();
}

#[wasm_bindgen_test]
async fn a_short_token_is_refreshed_silently_before_it_expires() {
    let log = stub_fetch(&js(&(String::from(r#"{"/auth/refresh":"#)
        + &minting(2)
        + "}")));
    let c = client("");
    let events = collect(&c);
    let second = until(&c, "refreshed", 2);
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":2}"#))
        .unwrap();
    let at = ok(second).await;
    assert_eq!(count(&log, "/auth/refresh"), 2, "one refresh per half-life");
    assert!(get(&at, "expiresAt").as_f64().unwrap() > js_sys::Date::now());
    assert_eq!(
        event_types(&events)[..3],
        ["signedIn", "refreshed", "refreshed"]
    );
    assert_eq!(
        get(&events.get(1), "source").as_string().as_deref(),
        Some("self")
    );
    c.dispose();
}

#[wasm_bindgen_test]
async fn bad_options_throw_invalid_options_naming_the_option() {
    let cases = [
        ("{}", "refreshUrl"),
        (r#"{"refreshUrl":"/r","bogus":1}"#, "bogus"),
        (
            r#"{"refreshUrl":"http://auth.example.com/r"}"#,
            "refreshUrl",
        ),
        (
            r#"{"refreshUrl":"/r","allowedOrigins":["http://api.example.com"]}"#,
            "allowedOrigins",
        ),
        (
            r#"{"refreshUrl":"/r","requestTimeoutMs":-1}"#,
            "requestTimeoutMs",
        ),
        (
            r#"{"refreshUrl":"/r","retry":{"maxAttempts":0}}"#,
            "retry.maxAttempts",
        ),
        (r#"{"refreshUrl":"/r","crossTab":"no"}"#, "crossTab"),
        ("[]", "options"),
    ];
    for (opts, name) in cases {
        let e = TokenClient::new(js(opts)).err().expect(opts);
        assert_eq!(code(&e), "invalid_options", "{opts}");
        let message = get(&e, "message").as_string().unwrap();
        assert!(message.contains(name), "{opts}: {message}");
    }
    let with_fn = js(r#"{"refreshUrl":"/r"}"#);
    Reflect::set(
        &with_fn,
        &"refreshHeaders".into(),
        &Function::new_no_args("return 1"),
    )
    .unwrap();
    assert_eq!(
        code(&TokenClient::new(with_fn).err().unwrap()),
        "invalid_options"
    );
    assert_eq!(
        code(&TokenClient::new(JsValue::from_str("/r")).err().unwrap()),
        "invalid_options"
    );
}

#[wasm_bindgen_test]
async fn set_session_validates_the_token_response() {
    let c = client("");
    for bad in [
        r#"{"token_type":"Bearer"}"#,
        r#"{"access_token":"t","token_type":"MAC"}"#,
        r#"{"access_token":"x.y.z"}"#,
        "42",
    ] {
        assert_eq!(
            code(&c.set_session(js(bad)).unwrap_err()),
            "invalid_response",
            "{bad}"
        );
    }
    assert_eq!(c.state(), "signedOut");
    c.set_session(js(
        r#"{"access_token":"t","token_type":"bearer","expires_in":"120"}"#,
    ))
    .unwrap();
    assert_eq!(c.state(), "active");
    let left = c.expires_at().as_f64().unwrap() - js_sys::Date::now();
    assert!((119_000.0..=120_500.0).contains(&left), "{left}");
    c.dispose();
}

#[wasm_bindgen_test]
async fn claims_and_scopes_are_read_from_the_jwt() {
    let c = client("");
    assert_eq!(c.claims(), JsValue::UNDEFINED);
    let token = make_jwt(&js(
        r#"{"sub":"u1","scope":"read:me write","name":"Zoë","iat":1000,"exp":1600}"#,
    ));
    let resp = js_sys::Object::new();
    Reflect::set(&resp, &"access_token".into(), &token.into()).unwrap();
    c.set_session(resp.into()).unwrap();
    assert_eq!(get(&c.claims(), "name").as_string().as_deref(), Some("Zoë"));
    assert!(
        c.has_scope("read:me".into())
            && c.has_scope("write".into())
            && !c.has_scope("admin".into())
    );
    let left = c.expires_at().as_f64().unwrap() - js_sys::Date::now();
    assert!(
        (599_000.0..=600_500.0).contains(&left),
        "exp - iat counted from arrival: {left}"
    );
    c.set_session(js(r#"{"access_token":"opaque","expires_in":60}"#))
        .unwrap();
    assert_eq!(c.claims(), JsValue::UNDEFINED);
    assert!(!c.has_scope("read:me".into()));
    c.dispose();
}

#[wasm_bindgen_test]
async fn a_throwing_listener_breaks_neither_the_client_nor_other_listeners() {
    stub_fetch(&js(&(String::from(r#"{"/auth/refresh":"#)
        + &minting(3600)
        + "}")));
    let c = client("");
    let thrower = Function::new_with_args("e", "throw new Error('listener bug')");
    let _unsub = c.subscribe(thrower.into()).unwrap();
    let events = collect(&c);
    let second = Array::new();
    let unsub = c.subscribe(pusher(&second).into()).unwrap();
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    unsub.call0(&JsValue::UNDEFINED).unwrap();
    unsub.call0(&JsValue::UNDEFINED).unwrap();
    ok(c.refresh()).await;
    assert_eq!(event_types(&events), ["signedIn", "refreshed"]);
    assert_eq!(
        event_types(&second),
        ["signedIn"],
        "unsubscribed after the first event"
    );
    c.dispose();
}

#[wasm_bindgen_test]
async fn start_reports_whether_a_session_exists() {
    stub_fetch(&js(
        r#"{"/auth/refresh":[{"status":401,"body":"{\"error\":\"invalid_grant\"}"}]}"#,
    ));
    let c = client("");
    assert_eq!(ok(c.start()).await, JsValue::FALSE);
    assert_eq!(c.state(), "signedOut");
    c.dispose();
    stub_fetch(&js(r#"{"/auth/refresh":[{"status":503}]}"#));
    let c = client("");
    assert_eq!(
        code(&err(c.start()).await),
        "server_error",
        "transient failures reject"
    );
    c.dispose();
    stub_fetch(&js(&(String::from(r#"{"/auth/refresh":"#)
        + &minting(60)
        + "}")));
    let c = client("");
    let events = collect(&c);
    assert_eq!(ok(c.start()).await, JsValue::TRUE);
    assert_eq!(event_types(&events), ["signedIn"]);
    c.dispose();
}

#[wasm_bindgen_test]
async fn refresh_and_logout_carry_credentials_and_the_csrf_header() {
    let routes =
        String::from(r#"{"/auth/logout":[{"status":204}],"/auth/refresh":"#) + &minting(60) + "}";
    let log = stub_fetch(&js(&routes));
    let c = client("");
    let events = collect(&c);
    assert_eq!(ok(c.start()).await, JsValue::TRUE);
    ok(c.logout()).await;
    assert_eq!(c.state(), "signedOut");
    assert_eq!(event_types(&events), ["signedIn", "signedOut"]);
    assert_eq!(
        get(&events.get(1), "reason").as_string().as_deref(),
        Some("logout")
    );
    for e in log.iter() {
        assert_eq!(get(&e, "method").as_string().as_deref(), Some("POST"));
        assert_eq!(
            get(&e, "credentials").as_string().as_deref(),
            Some("include")
        );
        assert_eq!(get(&e, "csrf").as_string().as_deref(), Some("tokenwarden"));
    }
    assert_eq!(log.length(), 2);
}

#[wasm_bindgen_test]
async fn a_failed_logout_call_still_clears_locally_and_rejects() {
    stub_fetch(&js(r#"{"/auth/logout":[{"status":500}]}"#));
    let c = client("");
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":60}"#))
        .unwrap();
    let e = err(c.logout()).await;
    assert_eq!(code(&e), "server_error");
    assert_eq!(c.state(), "signedOut");
    assert_eq!(ok(c.get_token()).await, JsValue::NULL);
    c.dispose();
}

#[wasm_bindgen_test]
async fn tabs_share_sign_in_refresh_and_sign_out_over_the_channel() {
    let log = stub_fetch(&js(&(String::from(
        r#"{"/auth/logout":[{"status":204}],"/auth/refresh":"#,
    ) + &minting(3600)
        + "}")));
    let opts =
        r#"{"refreshUrl":"/auth/refresh","logoutUrl":"/auth/logout","channelName":"tabs-test"}"#;
    let a = TokenClient::new(js(opts)).unwrap();
    let b = TokenClient::new(js(opts)).unwrap();
    let b_events = collect(&b);
    let b_in = until(&b, "signedIn", 1);
    a.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    ok(b_in).await;
    assert_eq!(
        ok(b.get_token()).await.as_string().as_deref(),
        Some("tok-0")
    );
    let b_refreshed = until(&b, "refreshed", 1);
    ok(a.refresh()).await;
    ok(b_refreshed).await;
    assert_eq!(
        ok(b.get_token()).await.as_string().as_deref(),
        Some("tok-1")
    );
    // A third tab starting up adopts the live token without a refresh call.
    let c = TokenClient::new(js(opts)).unwrap();
    assert_eq!(ok(c.start()).await, JsValue::TRUE);
    assert_eq!(
        ok(c.get_token()).await.as_string().as_deref(),
        Some("tok-1")
    );
    assert_eq!(count(&log, "/auth/refresh"), 1);
    let b_out = until(&b, "signedOut", 1);
    let c_out = until(&c, "signedOut", 1);
    ok(a.logout()).await;
    ok(b_out).await;
    ok(c_out).await;
    assert_eq!(b.state(), "signedOut");
    assert_eq!(c.state(), "signedOut");
    assert_eq!(
        event_types(&b_events),
        ["signedIn", "refreshed", "signedOut"]
    );
    assert_eq!(
        get(&b_events.get(1), "source").as_string().as_deref(),
        Some("tab")
    );
    assert_eq!(
        get(&b_events.get(2), "reason").as_string().as_deref(),
        Some("tab")
    );
    for x in [a, b, c] {
        x.dispose();
    }
}

#[wasm_bindgen_test]
async fn the_token_is_never_written_to_any_storage() {
    let report = spy_storage();
    let routes = String::from(
        r#"{"/auth/logout":[{"status":204}],"/api/me":[{"status":401},{"status":200}],"/auth/refresh":"#,
    ) + &minting(1)
        + "}";
    stub_fetch(&js(&routes));
    let c = TokenClient::new(js(
        r#"{"refreshUrl":"/auth/refresh","logoutUrl":"/auth/logout","channelName":"storage-test"}"#,
    ))
    .unwrap();
    ok(c.start()).await;
    ok(c.fetch(JsValue::from_str("/api/me"), JsValue::UNDEFINED)).await;
    // The 1 s tokens are refreshed silently at half-life.
    ok(until(&c, "refreshed", 1)).await;
    ok(c.refresh()).await;
    let _ = c.claims();
    ok(c.logout()).await;
    c.dispose();
    let writes = report.call0(&JsValue::UNDEFINED).unwrap();
    assert_eq!(
        JSON::stringify(&writes).unwrap().as_string().unwrap(),
        "[]",
        "storage APIs touched"
    );
}

#[wasm_bindgen_test]
async fn garbage_through_every_entry_point_gets_typed_errors_and_leaves_the_client_usable() {
    let log = stub_fetch(&js(r#"{"*":[{"status":200}]}"#));
    let garbage: Array = Function::new_no_args(
        "const circular = {}; circular.self = circular;
         const hostile = { get refreshUrl() { throw new Error('getter'); } };
         const badJson = { toJSON() { throw new Error('toJSON'); } };
         return [undefined, null, 0, NaN, -1, 'x'.repeat(1 << 20), '', [], {}, Symbol('s'), 10n,
                 circular, hostile, badJson, () => 1, new Date(0), new Uint8Array(4),
                 { access_token: { nested: true } }, { access_token: 'a'.repeat(100000) + '.b.c' }];",
    )
    .call0(&JsValue::UNDEFINED)
    .unwrap()
    .unchecked_into();
    let c = client("");
    let last = garbage.length() - 1;
    for (i, g) in garbage.iter().enumerate() {
        let what = format!("garbage #{i}");
        // None of them is a set of options, nor (but the last, a long token string) a token
        // response, nor (but the arrow function) a listener: each must be refused, typed.
        let e = TokenClient::new(g.clone()).err().expect(&what);
        assert_eq!(code(&e), "invalid_options", "{what}");
        match c.set_session(g.clone()) {
            Err(e) => assert_eq!(code(&e), "invalid_response", "{what}"),
            Ok(()) => assert_eq!(i as u32, last, "{what} was taken for a session"),
        }
        assert!(!c.has_scope(g.clone()));
        match c.subscribe(g.clone()) {
            Err(e) => assert_eq!(code(&e), "invalid_options", "{what}"),
            Ok(_) => assert!(g.is_function(), "{what} was taken for a listener"),
        }
        // fetch with garbage input or init: a TokenClientError, never a panic.
        for (input, init) in [
            (g.clone(), JsValue::UNDEFINED),
            (JsValue::from_str("/ok"), g.clone()),
        ] {
            if let Err(e) = JsFuture::from(c.fetch(input, init)).await {
                assert_eq!(
                    get(&e, "name").as_string().as_deref(),
                    Some("TokenClientError")
                );
            }
        }
    }
    // Still fully usable afterwards: nothing panicked inside the wasm.
    c.set_session(js(r#"{"access_token":"tok-ok","expires_in":60}"#))
        .unwrap();
    assert_eq!(
        ok(c.get_token()).await.as_string().as_deref(),
        Some("tok-ok")
    );
    ok(c.fetch(JsValue::from_str("/after"), JsValue::UNDEFINED)).await;
    assert_eq!(
        auths_for(&log, "/after").get(0).as_string().as_deref(),
        Some("Bearer tok-ok")
    );
    c.dispose();
}

#[wasm_bindgen_test]
async fn state_changed_and_refresh_at_reach_js() {
    let routes = String::from(r#"{"/auth/refresh":[{"delayMs":30,"mint":3600}]}"#);
    stub_fetch(&js(&routes));
    let c = client("");
    let states = Array::new();
    let make = Function::new_with_args(
        "arr",
        "return (e) => { if (e.type === 'stateChanged') arr.push(e.state); }",
    );
    c.subscribe(make.call1(&JsValue::UNDEFINED, &states).unwrap())
        .unwrap();
    assert_eq!(c.refresh_at(), JsValue::UNDEFINED);
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    let expires = c.expires_at().as_f64().unwrap();
    let at = c.refresh_at().as_f64().unwrap();
    assert!(
        (expires - at - 30_000.0).abs() < 2.0,
        "due 30 s before expiry"
    );
    ok(c.refresh()).await;
    let seen: Vec<String> = states.iter().filter_map(|s| s.as_string()).collect();
    assert_eq!(seen, ["active", "refreshing", "active"]);
    c.dispose();
}

#[wasm_bindgen_test]
async fn fetch_during_a_forced_refresh_waits_for_it_and_sends_the_new_token() {
    let routes = String::from(
        r#"{"/auth/refresh":[{"delayMs":50,"mint":3600}],"/api/data":[{"status":200}]}"#,
    );
    let log = stub_fetch(&js(&routes));
    let c = client("");
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    let forced = c.refresh();
    ok(c.fetch(JsValue::from_str("/api/data"), JsValue::UNDEFINED)).await;
    assert_eq!(
        auths_for(&log, "/api/data").get(0).as_string().as_deref(),
        Some("Bearer tok-1")
    );
    assert_eq!(ok(forced).await.as_string().as_deref(), Some("tok-1"));
    c.dispose();
}

#[wasm_bindgen_test]
async fn options_that_are_not_json_data_name_their_path() {
    let cases: [(&str, JsValue); 5] = [
        ("requestTimeoutMs", JsValue::from_f64(f64::NAN)),
        ("refreshSkewSeconds", JsValue::from_f64(f64::INFINITY)),
        (
            "retry.maxAttempts",
            Function::new_no_args("return 1").into(),
        ),
        ("retry.baseDelayMs", js_sys::BigInt::from(5u32).into()),
        ("allowedOrigins[0]", js_sys::Symbol::for_("x").into()),
    ];
    for (path, value) in cases {
        let opts = js(r#"{"refreshUrl":"/r","retry":{}}"#);
        let (head, tail) = path.split_once('.').unwrap_or((path, ""));
        if let Some(name) = head.strip_suffix("[0]") {
            Reflect::set(&opts, &name.into(), &Array::of1(&value)).unwrap();
        } else if tail.is_empty() {
            Reflect::set(&opts, &head.into(), &value).unwrap();
        } else {
            Reflect::set(&get(&opts, head), &tail.into(), &value).unwrap();
        }
        let e = TokenClient::new(opts).err().expect(path);
        assert_eq!(code(&e), "invalid_options", "{path}");
        let message = get(&e, "message").as_string().unwrap();
        assert!(message.starts_with(path), "{path}: {message}");
    }
}

#[wasm_bindgen_test]
async fn allowed_origins_are_normalised_by_the_browser_url() {
    let log = stub_fetch(&js(r#"{"*":[{"status":200}]}"#));
    let c = client(
        r#","allowedOrigins":["https://127.1","https://api.example.com:0443","https://bücher.example","http://127.0.0.1:1"]"#,
    );
    c.set_session(js(r#"{"access_token":"tok-0","expires_in":3600}"#))
        .unwrap();
    for url in [
        "https://127.0.0.1/a",
        "https://api.example.com/b",
        "https://xn--bcher-kva.example/c",
    ] {
        ok(c.fetch(JsValue::from_str(url), JsValue::UNDEFINED)).await;
        assert_eq!(
            auths_for(&log, url).get(0).as_string().as_deref(),
            Some("Bearer tok-0"),
            "{url}"
        );
    }
    c.dispose();
    // The https/loopback rule still holds after normalising.
    for bad in ["http://127.1.example", "http://api.example.com:80"] {
        let opts = String::from(r#"{"refreshUrl":"/r","allowedOrigins":[""#) + bad + r#""]}"#;
        let e = TokenClient::new(js(&opts)).err().expect(bad);
        assert_eq!(code(&e), "invalid_options", "{bad}");
    }
}

#[wasm_bindgen_test]
async fn url_objects_count_as_their_href_and_other_class_instances_are_refused() {
    let log = stub_fetch(&js(&(String::from(r#"{"/auth/refresh":"#)
        + &minting(3600)
        + "}")));
    let url = |href: &str| -> JsValue { web_sys::Url::new(href).unwrap().into() };
    let page = get(&get(&js_sys::global().into(), "location"), "href")
        .as_string()
        .unwrap();
    let opts = js(r#"{"crossTab":false}"#);
    let refresh = web_sys::Url::new_with_base("/auth/refresh", &page).unwrap();
    Reflect::set(&opts, &"refreshUrl".into(), &refresh.into()).unwrap();
    Reflect::set(
        &opts,
        &"allowedOrigins".into(),
        &Array::of1(&url("https://api.example.com")),
    )
    .unwrap();
    let c = TokenClient::new(opts).expect("URL objects are accepted");
    assert_eq!(ok(c.refresh()).await.as_string().as_deref(), Some("tok-1"));
    assert_eq!(count(&log, "/auth/refresh"), 1);
    ok(c.fetch(
        JsValue::from_str("https://api.example.com/a"),
        JsValue::UNDEFINED,
    ))
    .await;
    assert_eq!(
        auths_for(&log, "https://api.example.com/a")
            .get(0)
            .as_string()
            .as_deref(),
        Some("Bearer tok-1")
    );
    c.dispose();
    // Any other class instance is still not JSON data.
    let opts = js(r#"{"crossTab":false}"#);
    Reflect::set(&opts, &"refreshUrl".into(), &js_sys::Date::new_0().into()).unwrap();
    let e = TokenClient::new(opts).err().expect("a Date is refused");
    assert_eq!(code(&e), "invalid_options");
}
