//! A small executor and promise bridge, in place of `wasm-bindgen-futures`
//! (hand-written for size, issue 14: its queue, its `JsFuture` with two
//! closures made per await and its `future_to_promise`, with their JS glue,
//! took 413 B brotli more than this file: payload 48,097 -> 47,684 B, the
//! wasm 115,598 -> 114,268 B raw).
//!
//! - [`spawn`] runs a future to completion; tasks are polled in a
//!   microtask, as `wasm-bindgen-futures` does.
//! - [`JsPromise`] awaits a JS promise: its settlement comes back through
//!   two long-lived functions bound to where it lands
//!   (`Function.prototype.bind`), so no closure is made per await.
//! - [`promise`] turns a future into the `Promise` JS gets.
//!
//! The wasm runs on one thread (no atomics): the state below lives in a
//! `Local` cell, never touched from two threads.

use alloc::boxed::Box;
use alloc::rc::Rc;
use core::cell::RefCell;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;

#[allow(unused_imports)]
use crate::prelude::*;

use super::Local;

type Task = Pin<Box<dyn Future<Output = ()>>>;

enum Slot {
    Free,
    /// Being polled (taken out of the table meanwhile).
    Busy,
    Task(Task),
}

#[derive(Default)]
struct State {
    tasks: Vec<Slot>,
    ready: Vec<usize>,
    scheduled: bool,
    /// `queueMicrotask`'s callback and the two settle functions, made once.
    run: Option<Function>,
    settle: Option<(Function, Function)>,
}

static STATE: Local<Option<State>> = Local(RefCell::new(None));

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut s = STATE.0.borrow_mut();
    f(s.get_or_insert_with(State::default))
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = queueMicrotask)]
    fn queue_microtask(f: &Function);
    type Thenable;
    #[wasm_bindgen(method)]
    fn then(this: &Thenable, ok: &JsValue, err: &JsValue);
}

fn wake_task(id: usize) {
    let run = with(|s| {
        s.ready.push(id);
        if s.scheduled {
            return None;
        }
        s.scheduled = true;
        let f = s.run.get_or_insert_with(|| {
            Closure::<dyn FnMut()>::new(run_ready)
                .into_js_value()
                .unchecked_into()
        });
        Some(f.clone())
    });
    if let Some(f) = run {
        queue_microtask(&f);
    }
}

// The waker's data is the task's index: no allocation per waker. A wake
// after the task ended (or for a reused slot) is a spurious poll, which
// every future here tolerates.
static VTABLE: RawWakerVTable = RawWakerVTable::new(
    |p| RawWaker::new(p, &VTABLE),
    |p| wake_task(p as usize),
    |p| wake_task(p as usize),
    |_| {},
);

fn waker(id: usize) -> Waker {
    // SAFETY: the vtable's functions only read the index; they never
    // dereference the pointer.
    unsafe { Waker::from_raw(RawWaker::new(id as *const (), &VTABLE)) }
}

fn run_ready() {
    // In the order of their wakes, as `wasm-bindgen-futures` runs them
    // (`start()` spawned before `getToken()` must run first).
    loop {
        let batch = with(|s| core::mem::take(&mut s.ready));
        if batch.is_empty() {
            break;
        }
        for id in batch {
            let task = with(|s| match core::mem::replace(&mut s.tasks[id], Slot::Busy) {
                Slot::Task(t) => Some(t),
                other => {
                    s.tasks[id] = other;
                    None
                }
            });
            let Some(mut task) = task else { continue };
            let w = waker(id);
            let done = task.as_mut().poll(&mut Context::from_waker(&w)).is_ready();
            with(|s| s.tasks[id] = if done { Slot::Free } else { Slot::Task(task) });
        }
    }
    with(|s| s.scheduled = false);
}

/// Runs `task` to completion, starting in a microtask.
pub fn spawn(task: impl Future<Output = ()> + 'static) {
    let task: Task = Box::pin(task);
    let id = with(|s| {
        let free = s.tasks.iter().position(|t| matches!(t, Slot::Free));
        match free {
            Some(i) => {
                s.tasks[i] = Slot::Task(task);
                i
            }
            None => {
                s.tasks.push(Slot::Task(task));
                s.tasks.len() - 1
            }
        }
    });
    wake_task(id);
}

/// Where a [`JsPromise`]'s settlement lands.
type Landing = RefCell<(Option<Result<JsValue, JsValue>>, Option<Waker>)>;

/// Called by the bound settle functions with the landing's address.
fn settled(at: u32, result: Result<JsValue, JsValue>) {
    // SAFETY: `at` is a strong count `JsPromise::poll` leaked with
    // `Rc::into_raw` for this promise; a promise settles once, so only one
    // of its two callbacks runs, once, and takes that count back here.
    let landing = unsafe { Rc::from_raw(at as usize as *const Landing) };
    let waker = {
        let mut l = landing.borrow_mut();
        l.0 = Some(result);
        l.1.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
}

fn settle_functions() -> (Function, Function) {
    with(|s| {
        s.settle
            .get_or_insert_with(|| {
                let ok = Closure::<dyn FnMut(u32, JsValue)>::new(|at, v| settled(at, Ok(v)));
                let err = Closure::<dyn FnMut(u32, JsValue)>::new(|at, e| settled(at, Err(e)));
                (
                    ok.into_js_value().unchecked_into(),
                    err.into_js_value().unchecked_into(),
                )
            })
            .clone()
    })
}

/// Awaits a JS promise: `Ok` with its value or `Err` with its reason.
pub struct JsPromise {
    promise: Option<Promise>,
    landing: Rc<Landing>,
}

impl From<Promise> for JsPromise {
    fn from(p: Promise) -> Self {
        JsPromise {
            promise: Some(p),
            landing: Rc::new(RefCell::new((None, None))),
        }
    }
}

impl Future for JsPromise {
    type Output = Result<JsValue, JsValue>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut l = self.landing.borrow_mut();
        if let Some(r) = l.0.take() {
            return Poll::Ready(r);
        }
        l.1 = Some(cx.waker().clone());
        drop(l);
        if let Some(p) = self.promise.take() {
            // The settle callbacks own one count of the landing until the
            // promise settles (a promise that never settles keeps it).
            let at = JsValue::from(Rc::into_raw(self.landing.clone()) as usize as u32);
            let (ok, err) = settle_functions();
            p.unchecked_ref::<Thenable>().then(
                &ok.bind1(&JsValue::UNDEFINED, &at).into(),
                &err.bind1(&JsValue::UNDEFINED, &at).into(),
            );
        }
        Poll::Pending
    }
}

/// The `Promise` JS gets for `f`: resolved with its `Ok`, rejected with its
/// `Err`.
pub fn promise(f: impl Future<Output = Result<JsValue, JsValue>> + 'static) -> Promise {
    let mut ends = None;
    let p = Promise::new(&mut |resolve, reject| ends = Some((resolve, reject)));
    if let Some((resolve, reject)) = ends {
        spawn(async move {
            let (end, v) = match f.await {
                Ok(v) => (resolve, v),
                Err(e) => (reject, e),
            };
            let _ = end.call1(&JsValue::UNDEFINED, &v);
        });
    }
    p
}
