//! DPoP (RFC 9449) in the client, natively on the fake shell: proofs on
//! refresh and on `fetch` to allowed origins only, one key for all tabs
//! (travelling with the token), `DPoP-Nonce` kept per origin with exactly
//! one retry on `use_dpop_nonce`, binding right after `setSession`, and
//! `authorize(method, url)`. The fake server below checks each proof the
//! way the reference server does (typ, alg, jwk, signature, htm, htu, iat,
//! jti, ath, nonce); the fake key's "signature" is a keyed hash.
#![cfg(not(target_arch = "wasm32"))]

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use tokenwarden::driver::Driver;
use tokenwarden::error::Error;
use tokenwarden::fake::{fake_sha256, FakeRequest, FakeShell, World};
use tokenwarden::policy::dpop::b64url;
use tokenwarden::policy::options;
use tokenwarden::policy::response::Reply;
use tokenwarden::policy::token::parse_token_response;

#[path = "support/dpop_proof.rs"]
mod dpop_proof;
use dpop_proof::{check, header, Checked};

const T0: i64 = 1_700_000_000_000;
const ORIGIN: &str = "https://app.example";
const REFRESH: &str = "https://app.example/auth/refresh";

type Client = Rc<Driver<FakeShell>>;

fn client(world: &World, extra: &str) -> Client {
    let text = format!(r#"{{"refreshUrl":"/auth/refresh","dpop":true{extra}}}"#);
    let o = options::parse(&text, Some(ORIGIN), &|u| {
        Some(if u.starts_with('/') {
            format!("{ORIGIN}{u}")
        } else {
            u.to_string()
        })
    })
    .unwrap();
    Driver::new(world.tab(), o)
}

fn settle<T: Clone + 'static>(
    world: &World,
    f: impl std::future::Future<Output = T> + 'static,
) -> T {
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    let _ = world.call(async move { *o.borrow_mut() = Some(f.await) });
    for _ in 0..5_000 {
        world.run();
        if let Some(v) = out.borrow_mut().take() {
            return v;
        }
        world.advance(1);
    }
    panic!("did not settle");
}

/// The fake server: mints `d1`, `d2`, … (`token_type` DPoP, 300 s) for a
/// valid refresh proof; `nonce`, when set, must be in every proof.
struct Server {
    world: World,
    nonce: Rc<RefCell<Option<String>>>,
    jtis: Rc<RefCell<HashSet<String>>>,
    /// Every proof the API saw, checked.
    api_proofs: Rc<RefCell<Vec<Checked>>>,
}

fn server(world: &World) -> Server {
    let nonce: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
    let jtis = Rc::new(RefCell::new(HashSet::new()));
    let minted = Rc::new(RefCell::new(0u32));
    let w = world.clone();
    let (n, j) = (nonce.clone(), jtis.clone());
    world.endpoint(move |_url| {
        let posted = w.post_headers();
        let h = posted.last().cloned().unwrap_or_default();
        let now_s = w.now() / 1000;
        let reply = |status: u16, body: &str| {
            Ok(Reply {
                status,
                body: body.into(),
                retry_after: None,
                dpop_nonce: n.borrow().clone(),
                date: None,
            })
        };
        let Some(proof) = header(&h, "DPoP") else {
            return reply(400, r#"{"error":"invalid_dpop_proof"}"#);
        };
        let Ok(c) = check(&proof, now_s) else {
            return reply(400, r#"{"error":"invalid_dpop_proof"}"#);
        };
        if c.htm != "POST"
            || c.htu != REFRESH
            || c.ath.is_some()
            || !j.borrow_mut().insert(c.jti.clone())
        {
            return reply(400, r#"{"error":"invalid_dpop_proof"}"#);
        }
        if n.borrow().is_some() && c.nonce != *n.borrow() {
            return reply(400, r#"{"error":"use_dpop_nonce"}"#);
        }
        *minted.borrow_mut() += 1;
        let body = format!(
            r#"{{"access_token":"d{}","token_type":"DPoP","expires_in":300}}"#,
            minted.borrow()
        );
        reply(200, &body)
    });
    let api_proofs = Rc::new(RefCell::new(Vec::new()));
    let (w, n, j, seen) = (
        world.clone(),
        nonce.clone(),
        jtis.clone(),
        api_proofs.clone(),
    );
    world.api_with_headers(move |r: &FakeRequest| {
        let nonce_header = || {
            n.borrow()
                .clone()
                .map(|v| vec![("DPoP-Nonce".to_string(), v)])
                .unwrap_or_default()
        };
        let deny = |why: &str| {
            let mut h = nonce_header();
            h.push((
                "WWW-Authenticate".into(),
                format!("DPoP error=\"{why}\", algs=\"ES256\""),
            ));
            (401, h)
        };
        let Some(token) = r
            .authorization()
            .and_then(|a| a.strip_prefix("DPoP ").map(String::from))
        else {
            return deny("invalid_token");
        };
        let Some(Ok(c)) = r.header("DPoP").map(|p| check(&p, w.now() / 1000)) else {
            return deny("invalid_dpop_proof");
        };
        seen.borrow_mut().push(c.clone());
        if c.ath.as_deref() != Some(b64url(&fake_sha256(&token)).as_str())
            || !j.borrow_mut().insert(c.jti.clone())
        {
            return deny("invalid_dpop_proof");
        }
        if n.borrow().is_some() && c.nonce != *n.borrow() {
            return deny("use_dpop_nonce");
        }
        (200, nonce_header())
    });
    Server {
        world: world.clone(),
        nonce,
        jtis,
        api_proofs,
    }
}

fn fetch(world: &World, c: &Client, url: &str) -> (u16, FakeRequest) {
    let req = FakeRequest::get(url);
    let sent = req.clone();
    let c = c.clone();
    let status = settle(world, async move {
        c.fetch(req).await.map(|r| r.status).map_err(|_| ())
    });
    (status.expect("a response"), sent)
}

fn refresh_proofs(world: &World) -> Vec<Checked> {
    world
        .post_headers()
        .iter()
        .filter_map(|h| header(h, "DPoP"))
        .map(|p| check(&p, world.now() / 1000).expect("a valid proof"))
        .collect()
}

#[test]
fn the_refresh_and_every_api_call_carry_a_fresh_proof_from_one_key() {
    let world = World::new(T0);
    let s = server(&world);
    let a = client(&world, "");
    let c = a.clone();
    assert_eq!(settle(&world, async move { c.start().await }), Ok(true));
    let refresh = refresh_proofs(&world);
    assert_eq!(refresh.len(), 1);
    assert_eq!(
        (refresh[0].htm.as_str(), refresh[0].htu.as_str()),
        ("POST", REFRESH)
    );
    assert_eq!(refresh[0].ath, None);
    for _ in 0..3 {
        let (status, sent) = fetch(&world, &a, "https://app.example/api/me?q=1#frag");
        assert_eq!(status, 200);
        assert_eq!(sent.authorization().as_deref(), Some("DPoP d1"));
    }
    let proofs = s.api_proofs.borrow().clone();
    assert_eq!(proofs.len(), 3);
    for p in &proofs {
        assert_eq!(
            (p.htm.as_str(), p.htu.as_str()),
            ("GET", "https://app.example/api/me")
        );
        assert_eq!(p.key, refresh[0].key, "the key the token is bound to");
    }
    let jtis: HashSet<_> = proofs.iter().map(|p| &p.jti).collect();
    assert_eq!(jtis.len(), 3, "a unique jti per proof");
    assert_eq!(world.keys_made(), 1);
    assert_eq!(s.jtis.borrow().len(), 4);
}

#[test]
fn requests_to_other_origins_get_neither_the_token_nor_a_proof() {
    let world = World::new(T0);
    let _s = server(&world);
    let a = client(&world, "");
    let c = a.clone();
    assert_eq!(settle(&world, async move { c.start().await }), Ok(true));
    let (_, sent) = fetch(&world, &a, "https://elsewhere.example/api");
    assert_eq!(sent.authorization(), None);
    assert_eq!(sent.header("DPoP"), None);
    let c = a.clone();
    let h = settle(&world, async move {
        c.authorize("GET", "https://elsewhere.example/x").await
    });
    assert_eq!(h, Ok(None));
}

#[test]
fn a_tab_opened_later_receives_the_key_with_the_token_and_signs_valid_proofs() {
    let world = World::new(T0);
    let s = server(&world);
    let a = client(&world, "");
    let c = a.clone();
    assert_eq!(settle(&world, async move { c.start().await }), Ok(true));
    world.advance(10_000);
    let b = client(&world, "");
    let c = b.clone();
    assert_eq!(settle(&world, async move { c.start().await }), Ok(true));
    assert_eq!(
        refresh_proofs(&world).len(),
        1,
        "the late tab did not refresh"
    );
    let (status, sent) = fetch(&world, &b, "https://app.example/api/me");
    assert_eq!(status, 200);
    assert_eq!(sent.authorization().as_deref(), Some("DPoP d1"));
    assert_eq!(world.keys_made(), 1, "no second key");
    assert_eq!(s.api_proofs.borrow()[0].key, refresh_proofs(&world)[0].key);
}

#[test]
fn a_new_nonce_costs_exactly_one_retry_on_the_api_and_on_the_refresh_endpoint() {
    let world = World::new(T0);
    let s = server(&world);
    *s.nonce.borrow_mut() = Some("n1".into());
    let a = client(&world, "");
    let c = a.clone();
    assert_eq!(settle(&world, async move { c.start().await }), Ok(true));
    let refresh = refresh_proofs(&world);
    assert_eq!(refresh.len(), 2, "one use_dpop_nonce, one retry");
    assert_eq!(
        (refresh[0].nonce.as_deref(), refresh[1].nonce.as_deref()),
        (None, Some("n1"))
    );
    let (status, _) = fetch(&world, &a, "https://app.example/api/me");
    assert_eq!(status, 200);
    assert_eq!(
        s.api_proofs.borrow().len(),
        1,
        "the kept nonce was used at once"
    );
    *s.nonce.borrow_mut() = Some("n2".into());
    let (status, _) = fetch(&world, &a, "https://app.example/api/me");
    assert_eq!(status, 200);
    let proofs = s.api_proofs.borrow().clone();
    assert_eq!(proofs.len(), 3, "one retry");
    assert_eq!(
        (proofs[1].nonce.as_deref(), proofs[2].nonce.as_deref()),
        (Some("n1"), Some("n2"))
    );
    assert_eq!(
        refresh_proofs(&s.world).len(),
        2,
        "a nonce change is not a refresh"
    );
}

#[test]
fn a_repeated_use_dpop_nonce_with_the_same_nonce_is_not_retried_again() {
    let world = World::new(T0);
    let s = server(&world);
    let a = client(&world, "");
    let c = a.clone();
    assert_eq!(settle(&world, async move { c.start().await }), Ok(true));
    // An API that always asks for a nonce and always gives the same one.
    let seen = s.api_proofs.clone();
    world.api_with_headers(move |r| {
        seen.borrow_mut()
            .push(check(&r.header("DPoP").unwrap(), T0 / 1000).unwrap());
        (
            401,
            vec![
                ("DPoP-Nonce".into(), "same".into()),
                (
                    "WWW-Authenticate".into(),
                    r#"DPoP error="use_dpop_nonce""#.into(),
                ),
            ],
        )
    });
    let _ = fetch(&world, &a, "https://app.example/api/me");
    let first = s.api_proofs.borrow().len();
    assert_eq!(first, 2, "the first answer brought a new nonce: one retry");
    let (status, _) = fetch(&world, &a, "https://app.example/api/me");
    assert_eq!(status, 401, "returned to the caller as is");
    // The nonce did not change: no retry, and no refresh either (a new token would not help).
    let nonces: Vec<_> = s.api_proofs.borrow()[first..]
        .iter()
        .map(|p| p.nonce.clone())
        .collect();
    assert_eq!(nonces, [Some("same".to_string())]);
    assert_eq!(refresh_proofs(&world).len(), 1);
}

#[test]
fn a_session_from_set_session_is_bound_by_a_refresh_right_away() {
    let world = World::new(T0);
    let _s = server(&world);
    let a = client(&world, "");
    let b = client(&world, "");
    a.set_session(
        parse_token_response(r#"{"access_token":"login","token_type":"Bearer","expires_in":300}"#)
            .unwrap(),
    )
    .unwrap();
    world.advance(100);
    assert_eq!(refresh_proofs(&world).len(), 1);
    let (status, sent) = fetch(&world, &a, "https://app.example/api/me");
    assert_eq!(status, 200);
    assert_eq!(sent.authorization().as_deref(), Some("DPoP d1"));
    // The other tab got only the bound token, with its key: it signs valid proofs.
    let (status, sent) = fetch(&world, &b, "https://app.example/api/me");
    assert_eq!(status, 200);
    assert_eq!(sent.authorization().as_deref(), Some("DPoP d1"));
    assert_eq!(world.keys_made(), 1);
}

#[test]
fn a_dpop_token_is_refused_by_set_session_when_dpop_is_off() {
    let world = World::new(T0);
    let text = r#"{"refreshUrl":"/auth/refresh"}"#;
    let o = options::parse(text, Some(ORIGIN), &|u| Some(format!("{ORIGIN}{u}"))).unwrap();
    let a = Driver::new(world.tab(), o);
    let r =
        a.set_session(parse_token_response(r#"{"access_token":"t","token_type":"DPoP"}"#).unwrap());
    assert!(matches!(r, Err(Error::InvalidResponse(_))));
}

#[test]
fn authorize_returns_the_dpop_authorization_and_a_proof_for_that_request() {
    let world = World::new(T0);
    let _s = server(&world);
    let a = client(&world, "");
    let c = a.clone();
    assert_eq!(settle(&world, async move { c.start().await }), Ok(true));
    let c = a.clone();
    let h = settle(&world, async move {
        c.authorize("post", "https://app.example/api/items?x=1")
            .await
    })
    .unwrap()
    .unwrap();
    assert_eq!(header(&h, "Authorization").as_deref(), Some("DPoP d1"));
    let p = check(&header(&h, "DPoP").unwrap(), world.now() / 1000).unwrap();
    assert_eq!(
        (p.htm.as_str(), p.htu.as_str()),
        ("POST", "https://app.example/api/items")
    );
    assert_eq!(p.ath, Some(b64url(&fake_sha256("d1"))));
}

const PROVIDER_TOKEN: &str = "https://id.example/token";

/// A backend in upstream mode: a refresh without a `DPoP-Upstream` proof is
/// answered 400 `use_upstream_dpop` naming the provider's token endpoint (and
/// `nonce`, when set); with one — by the refresh proof's key, `htm` POST, `htu`
/// the provider's endpoint, the provider's nonce, no `ath` — it mints a token.
/// `always` challenges every time. Returns the upstream proofs seen.
fn upstream_server(
    world: &World,
    nonce: Option<&'static str>,
    always: bool,
) -> Rc<RefCell<Vec<Checked>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (w, s) = (world.clone(), seen.clone());
    let minted = Rc::new(RefCell::new(0u32));
    world.endpoint(move |_url| {
        let h = w.post_headers().last().cloned().unwrap_or_default();
        let now_s = w.now() / 1000;
        let reply = |status: u16, body: String| {
            Ok(Reply {
                status,
                body,
                retry_after: None,
                dpop_nonce: None,
                date: None,
            })
        };
        let own = check(&header(&h, "DPoP").expect("a refresh proof"), now_s).unwrap();
        let challenge = || {
            let n = nonce.map_or(String::new(), |n| {
                format!(r#","dpop_upstream_nonce":"{n}""#)
            });
            reply(
                400,
                format!(
                    r#"{{"error":"use_upstream_dpop","dpop_upstream_htu":"{PROVIDER_TOKEN}"{n}}}"#
                ),
            )
        };
        let Some(up) = header(&h, "DPoP-Upstream") else {
            return challenge();
        };
        let up = check(&up, now_s).expect("a valid upstream proof");
        s.borrow_mut().push(up.clone());
        assert_eq!(up.key, own.key, "signed by the same key");
        assert_eq!((up.htm.as_str(), up.htu.as_str()), ("POST", PROVIDER_TOKEN));
        assert_eq!(up.ath, None);
        assert_eq!(up.nonce.as_deref(), nonce, "the provider's nonce");
        assert_ne!(up.jti, own.jti);
        if always {
            return challenge();
        }
        *minted.borrow_mut() += 1;
        reply(
            200,
            format!(
                r#"{{"access_token":"u{}","token_type":"DPoP","expires_in":300}}"#,
                minted.borrow()
            ),
        )
    });
    seen
}

#[test]
fn upstream_mode_a_use_upstream_dpop_answer_costs_one_retry_with_a_proof_for_the_providers_endpoint(
) {
    let world = World::new(T0);
    let upstream = upstream_server(&world, Some("pn1"), false);
    let a = client(&world, "");
    let c = a.clone();
    assert_eq!(settle(&world, async move { c.start().await }), Ok(true));
    assert_eq!(world.posts().len(), 2, "one challenge, one retry");
    assert_eq!(upstream.borrow().len(), 1);
    let (status, sent) = fetch(&world, &a, "https://app.example/api/me");
    assert_eq!(
        (status, sent.authorization().as_deref()),
        (200, Some("DPoP u1"))
    );
    // From now on every refresh carries both proofs: no challenge.
    let c = a.clone();
    assert!(settle(&world, async move { c.refresh().await.map(|_| ()) }).is_ok());
    assert_eq!(
        world.posts().len(),
        3,
        "no challenge once the endpoint is known"
    );
    assert_eq!(upstream.borrow().len(), 2);
    assert_eq!(world.keys_made(), 1);
}

#[test]
fn upstream_mode_a_backend_that_keeps_asking_gets_two_retries_and_no_more() {
    let world = World::new(T0);
    let upstream = upstream_server(&world, None, true);
    let a = client(&world, "");
    let c = a.clone();
    assert_eq!(settle(&world, async move { c.start().await }), Ok(false));
    assert_eq!(world.posts().len(), 3, "the first call and two retries");
    assert_eq!(upstream.borrow().len(), 2);
}

/// A backend that does not bind (it ignores the proof and answers
/// `token_type: "Bearer"`, as the reference server does in front of an
/// OpenID Provider without DPoP): the tokens go as `Bearer` without a proof,
/// in this tab and in a tab that adopts them (RFC 9449 §7.1).
#[test]
fn a_token_the_backend_returned_as_bearer_goes_as_bearer_without_a_proof() {
    let world = World::new(T0);
    let minted = Rc::new(RefCell::new(0u32));
    let m = minted.clone();
    world.endpoint(move |_url| {
        *m.borrow_mut() += 1;
        Ok(Reply {
            status: 200,
            body: format!(
                r#"{{"access_token":"b{}","token_type":"Bearer","expires_in":300}}"#,
                m.borrow()
            ),
            retry_after: None,
            dpop_nonce: None,
            date: None,
        })
    });
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    world.api_with_headers(move |r: &FakeRequest| {
        s.borrow_mut().push((r.authorization(), r.header("DPoP")));
        match r.authorization() {
            Some(a) if a.starts_with("Bearer ") => (200, vec![]),
            _ => (401, vec![]),
        }
    });
    let a = client(&world, "");
    let c = a.clone();
    assert_eq!(settle(&world, async move { c.start().await }), Ok(true));
    assert_eq!(
        refresh_proofs(&world).len(),
        1,
        "the refresh still offers a proof"
    );
    let (status, sent) = fetch(&world, &a, "https://app.example/api/me");
    assert_eq!(status, 200);
    assert_eq!(sent.authorization().as_deref(), Some("Bearer b1"));
    assert_eq!(sent.header("DPoP"), None);
    let c = a.clone();
    let h = settle(&world, async move {
        c.authorize("GET", "https://app.example/api/me").await
    })
    .unwrap()
    .unwrap();
    assert_eq!(
        h,
        vec![("Authorization".to_string(), "Bearer b1".to_string())]
    );

    // A tab opened later adopts the token as it was issued: Bearer.
    world.advance(10_000);
    let b = client(&world, "");
    let c = b.clone();
    assert_eq!(settle(&world, async move { c.start().await }), Ok(true));
    assert_eq!(*minted.borrow(), 1, "handed over, not refreshed");
    let (status, sent) = fetch(&world, &b, "https://app.example/api/me");
    assert_eq!(status, 200);
    assert_eq!(sent.authorization().as_deref(), Some("Bearer b1"));
    assert_eq!(sent.header("DPoP"), None);
    assert_eq!(seen.borrow().len(), 2);
    assert!(
        seen.borrow().iter().all(|(_, p)| p.is_none()),
        "no proof reached the API"
    );
}

/// A backend that binds but says `token_type: "Bearer"` (or leaves it out):
/// the JWT's `cnf.jkt` marks it bound, and it is only ever sent with a proof
/// (API.md: "a token bound to a key (`cnf.jkt`) is only ever sent with a
/// proof from that key").
#[test]
fn a_jwt_with_cnf_jkt_goes_with_a_proof_whatever_its_token_type_says() {
    let jwt = |n: u32| {
        let payload = format!(r#"{{"sub":"u{n}","cnf":{{"jkt":"thumbprint"}}}}"#);
        format!(
            "{}.{}.sig",
            b64url(br#"{"alg":"ES256"}"#),
            b64url(payload.as_bytes())
        )
    };
    for token_type in [r#","token_type":"Bearer""#, ""] {
        let world = World::new(T0);
        let minted = Rc::new(RefCell::new(0u32));
        let m = minted.clone();
        world.endpoint(move |_url| {
            *m.borrow_mut() += 1;
            Ok(Reply {
                status: 200,
                body: format!(
                    r#"{{"access_token":"{}"{token_type},"expires_in":300}}"#,
                    jwt(*m.borrow())
                ),
                retry_after: None,
                dpop_nonce: None,
                date: None,
            })
        });
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        world.api_with_headers(move |r: &FakeRequest| {
            s.borrow_mut().push((r.authorization(), r.header("DPoP")));
            (200, vec![])
        });
        let a = client(&world, "");
        let c = a.clone();
        assert_eq!(settle(&world, async move { c.start().await }), Ok(true));
        let (status, sent) = fetch(&world, &a, "https://app.example/api/me");
        assert_eq!(status, 200);
        let expected = format!("DPoP {}", jwt(1));
        assert_eq!(sent.authorization(), Some(expected.clone()), "{token_type}");
        let proof = sent.header("DPoP").expect("a proof");
        let p = check(&proof, world.now() / 1000).expect("a valid proof");
        assert_eq!(p.key, refresh_proofs(&world)[0].key, "the tab's key");
        let c = a.clone();
        let h = settle(&world, async move {
            c.authorize("GET", "https://app.example/api/me").await
        })
        .unwrap()
        .unwrap();
        assert_eq!(h[0], ("Authorization".to_string(), expected));
        assert_eq!(h[1].0, "DPoP");
        assert!(seen.borrow().iter().all(|(_, p)| p.is_some()));
    }
    // With dpop off, setSession refuses it as it refuses a `DPoP` token.
    let world = World::new(T0);
    let text = r#"{"refreshUrl":"/auth/refresh"}"#;
    let o = options::parse(text, Some(ORIGIN), &|u| Some(format!("{ORIGIN}{u}"))).unwrap();
    let a = Driver::new(world.tab(), o);
    let body = format!(r#"{{"access_token":"{}","token_type":"Bearer"}}"#, jwt(1));
    let r = a.set_session(parse_token_response(&body).unwrap());
    assert!(matches!(r, Err(Error::InvalidResponse(_))));
}

/// Two requests of one tab leave with the same nonce, and the server changes
/// it before either arrives. The first answer brings the new nonce; the
/// second request, refused for the same reason, is retried too: whether to
/// retry compares the nonce a request was signed with, not whether its
/// answer changed the nonce kept (the first answer already had).
#[test]
fn a_request_refused_for_a_nonce_another_answer_brought_meanwhile_is_still_retried() {
    let world = World::new(T0);
    let s = server(&world);
    *s.nonce.borrow_mut() = Some("n1".into());
    let a = client(&world, "");
    let c = a.clone();
    assert_eq!(settle(&world, async move { c.start().await }), Ok(true));
    let (status, _) = fetch(&world, &a, "https://app.example/api/me");
    assert_eq!(status, 200, "n1 is kept");
    let before = s.api_proofs.borrow().len();
    world.latency(100);
    let results: Vec<_> = (0..2)
        .map(|_| {
            let c = a.clone();
            world.call(async move {
                c.fetch(FakeRequest::get("https://app.example/api/me"))
                    .await
                    .map(|r| r.status)
                    .map_err(|_| ())
            })
        })
        .collect();
    world.advance(5);
    *s.nonce.borrow_mut() = Some("n2".into());
    world.advance(1_000);
    let statuses: Vec<_> = results
        .iter()
        .map(|r| {
            let status = Rc::new(RefCell::new(None));
            let st = status.clone();
            let r = r.clone();
            let _ = world.call(async move { *st.borrow_mut() = Some(r.wait().await) });
            world.run();
            let v = status.borrow_mut().take();
            v
        })
        .collect();
    assert_eq!(statuses, [Some(Ok(200)), Some(Ok(200))]);
    let nonces: Vec<_> = s.api_proofs.borrow()[before..]
        .iter()
        .map(|p| p.nonce.clone().unwrap())
        .collect();
    assert_eq!(
        nonces,
        ["n1", "n1", "n2", "n2"],
        "each retried once, with n2"
    );
}

/// The token's lifetime counts from when the request that got it left: after
/// a `use_dpop_nonce` retry, from the retry (counting from the first call
/// would cut the token's life by a round trip at every refresh).
#[test]
fn a_token_got_after_a_nonce_retry_lives_from_the_retry() {
    let world = World::new(T0);
    let s = server(&world);
    *s.nonce.borrow_mut() = Some("n1".into());
    world.latency(100);
    let a = client(&world, "");
    let c = a.clone();
    assert_eq!(settle(&world, async move { c.start().await }), Ok(true));
    assert_eq!(
        refresh_proofs(&world).len(),
        2,
        "one use_dpop_nonce, one retry"
    );
    // The retry left one latency before the answer arrived, now.
    assert_eq!(a.expires_at(), Some(world.now() - 100 + 300_000));
}

#[path = "support/http_date.rs"]
mod http_date;

/// The page's clock is 30 s fast (or 90 s slow). The server, like the reference server,
/// takes a proof's `iat` up to 5 s ahead of its clock and 60 s behind, and sends its clock
/// in `Date`. Before, every proof was refused (`invalid_dpop_proof`) and the session ended
/// at its first refresh; now the refused one is made again dated by the server's clock, and
/// every proof after it is dated so from the start.
#[test]
fn proofs_are_dated_by_the_servers_clock_when_the_page_clock_is_off() {
    for skew in [30_000i64, -90_000] {
        let world = World::new(T0);
        world.skew_wall(skew);
        let w = world.clone();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let log = seen.clone();
        world.endpoint(move |_url| {
            let h = w.post_headers().last().cloned().unwrap_or_default();
            let server_ms = w.now();
            let proof = header(&h, "DPoP").expect("a refresh proof");
            // (The support check also bounds iat, by ±60 s: read it at either clock.)
            let iat = check(&proof, server_ms / 1000)
                .or_else(|_| check(&proof, (server_ms + skew) / 1000))
                .map(|c| c.iat);
            let ok = iat.is_ok_and(|i| (server_ms / 1000 - 60..=server_ms / 1000 + 5).contains(&i));
            log.borrow_mut().push(ok);
            Ok(Reply {
                status: if ok { 200 } else { 400 },
                body: if ok {
                    r#"{"access_token":"d1","token_type":"DPoP","expires_in":300}"#.into()
                } else {
                    r#"{"error":"invalid_dpop_proof"}"#.into()
                },
                retry_after: None,
                dpop_nonce: None,
                date: Some(http_date::http_date(server_ms)),
            })
        });
        let a = client(&world, "");
        let c = a.clone();
        assert_eq!(
            settle(&world, async move { c.start().await }),
            Ok(true),
            "skew {skew}"
        );
        assert_eq!(
            *seen.borrow(),
            [false, true],
            "skew {skew}: one refused, one retried"
        );
        // The next refresh is dated right at once.
        let c = a.clone();
        assert!(settle(&world, async move { c.refresh().await }).is_ok());
        assert_eq!(*seen.borrow(), [false, true, true], "skew {skew}");
    }
}

/// Upstream mode with the backend's own DPoP nonce in front of a provider that wants its
/// nonce too (RFC 9449 §8 at both): the first refresh needs three retries — our
/// `use_dpop_nonce`, then `use_upstream_dpop` naming the endpoint, then again with the
/// provider's nonce. One budget of two retries for both kinds signed the user out.
/// (Written by the DPoP audit of 2026-12-05.)
#[test]
fn a_first_refresh_needing_our_nonce_and_the_providers_completes() {
    const PROVIDER_TOKEN: &str = "https://id.example/token";
    let world = World::new(T0);
    let w = world.clone();
    let answers = Rc::new(RefCell::new(Vec::<u16>::new()));
    let log = answers.clone();
    world.endpoint(move |_url| {
        let h = w.post_headers().last().cloned().unwrap_or_default();
        let own = check(&header(&h, "DPoP").expect("a refresh proof"), w.now() / 1000).unwrap();
        let reply = |status: u16, body: String| {
            log.borrow_mut().push(status);
            Ok(Reply {
                status,
                body,
                retry_after: None,
                dpop_nonce: Some("our-n1".into()),
                date: None,
            })
        };
        if own.nonce.as_deref() != Some("our-n1") {
            return reply(400, r#"{"error":"use_dpop_nonce"}"#.into());
        }
        let Some(up) = header(&h, "DPoP-Upstream") else {
            return reply(
                400,
                format!(r#"{{"error":"use_upstream_dpop","dpop_upstream_htu":"{PROVIDER_TOKEN}"}}"#),
            );
        };
        if check(&up, w.now() / 1000).unwrap().nonce.as_deref() != Some("pn1") {
            return reply(400, format!(r#"{{"error":"use_upstream_dpop","dpop_upstream_htu":"{PROVIDER_TOKEN}","dpop_upstream_nonce":"pn1"}}"#));
        }
        reply(200, r#"{"access_token":"u1","token_type":"DPoP","expires_in":300}"#.into())
    });
    let a = client(&world, "");
    assert_eq!(settle(&world, async move { a.start().await }), Ok(true));
    assert_eq!(*answers.borrow(), [400, 400, 400, 200]);
}

/// `dpop` off, and the refresh endpoint answers `token_type: "DPoP"` (a token bound to a
/// key this client never had): refused as `setSession` refuses it. Before, it was taken and
/// `fetch` sent it as `Bearer` (RFC 9449 §7.2: never). (DPoP audit of 2026-12-05.)
#[test]
fn a_bound_token_from_the_refresh_endpoint_with_dpop_off_is_refused() {
    let world = World::new(T0);
    world.endpoint(move |_url| {
        Ok(Reply {
            status: 200,
            body: r#"{"access_token":"d1","token_type":"DPoP","expires_in":300}"#.into(),
            retry_after: None,
            dpop_nonce: None,
            date: None,
        })
    });
    world.api(|_| 200);
    let o = options::parse(r#"{"refreshUrl":"/auth/refresh"}"#, Some(ORIGIN), &|u| {
        Some(format!("{ORIGIN}{u}"))
    })
    .unwrap();
    let a = Driver::new(world.tab(), o);
    let c = a.clone();
    let started = settle(&world, async move { c.start().await });
    assert!(
        matches!(started, Err(Error::InvalidResponse(_)) | Ok(false)),
        "{started:?}"
    );
    let req = FakeRequest::get("https://app.example/api/me");
    let sent = req.clone();
    let c = a.clone();
    let _ = settle(&world, async move { c.fetch(req).await.is_ok() });
    assert_eq!(sent.authorization(), None, "never as Bearer");
}

/// A DPoP refresh whose first answer is `use_dpop_nonce`, the client disposed while that
/// request is on its way: no retry goes out (each would be a rotation whose token is thrown
/// away), and `refresh()` settles as `disposed`. (Lifecycle audit of 2026-12-05.)
#[test]
fn a_client_disposed_during_a_refresh_sends_no_nonce_retry() {
    let world = World::new(T0);
    world.latency(1_000);
    let n = Rc::new(RefCell::new(0u32));
    let c = n.clone();
    world.endpoint(move |_| {
        *c.borrow_mut() += 1;
        let k = *c.borrow();
        Ok(Reply {
            status: if k % 2 == 1 { 400 } else { 200 },
            body: if k % 2 == 1 {
                r#"{"error":"use_dpop_nonce"}"#.into()
            } else {
                format!(r#"{{"access_token":"d{k}","token_type":"DPoP","expires_in":300}}"#)
            },
            retry_after: None,
            dpop_nonce: Some(format!("n{k}")),
            date: None,
        })
    });
    let a = client(&world, "");
    a.set_session(
        parse_token_response(r#"{"access_token":"a","token_type":"DPoP","expires_in":300}"#)
            .unwrap(),
    )
    .unwrap();
    world.run();
    let before = world.posts().len();
    let out = Rc::new(RefCell::new(None));
    let (o, c) = (out.clone(), a.clone());
    let _ = world.call(async move { *o.borrow_mut() = Some(c.refresh().await.map(|_| ())) });
    world.advance(500);
    a.dispose();
    world.advance(5_000);
    assert_eq!(
        world.posts().len() - before,
        1,
        "only the request sent before dispose"
    );
    assert_eq!(*out.borrow(), Some(Err(Error::Disposed)));
}
