//! Headless Chromium driven over the DevTools protocol (a WebSocket on 127.0.0.1): open a
//! page, run a script in it, take a screenshot, and list every request the browser made.
//! Kept off the network as `chromium_render` is (no background connections, a proxy that goes
//! nowhere); the requests are recorded from `Network.requestWillBeSent`, so a page that asked
//! anything of another host shows in [`Browser::requests`].

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Every URL the browser asked for, in order.
    requests: Vec<String>,
    _profile: tempfile::TempDir,
}

/// A page (a target with its own session).
#[derive(Clone)]
pub struct Page {
    session: String,
}

impl Browser {
    /// Chromium, headless, or `None` when it is not installed (a failure instead when
    /// `CHISO_REQUIRE_CHROMIUM` is set, as CI sets it).
    pub fn launch() -> Option<Browser> {
        let bin = super::chromium("the console's browser checks")?;
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin)
            .args(super::CHROMIUM_FLAGS)
            .args([
                "--disable-extensions",
                "--window-size=1280,1400",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("chromium ended before it listened")
                .unwrap();
            if let Some(u) = line.strip_prefix("DevTools listening on ") {
                break u.trim().to_string();
            }
        };
        // Keep draining its stderr so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
        let (ws, _) = tungstenite::connect(url.as_str()).unwrap();
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        }
        Some(Browser {
            child,
            ws,
            next_id: 0,
            requests: Vec::new(),
            _profile: profile,
        })
    }

    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string())).unwrap();
        loop {
            let m = self.ws.read().unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["method"] == "Network.requestWillBeSent" {
                if let Some(u) = v["params"]["request"]["url"].as_str() {
                    self.requests.push(u.to_string());
                }
            }
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    /// A new page, its network recorded.
    pub fn page(&mut self) -> Page {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        let page = Page {
            session: attached["sessionId"].as_str().unwrap().to_string(),
        };
        self.call(Some(&page.session), "Network.enable", json!({}));
        self.call(Some(&page.session), "Page.enable", json!({}));
        page
    }

    /// Opens `url` and waits until it has loaded.
    pub fn open(&mut self, page: &Page, url: &str) {
        // The old document is marked: the new one is loaded when the mark is gone (the page
        // may rewrite its own address, so the address does not tell).
        self.eval(page, "window.__leaving = true");
        self.call(Some(&page.session), "Page.navigate", json!({ "url": url }));
        assert!(
            self.wait(
                page,
                "!window.__leaving && document.readyState === 'complete'",
                Duration::from_secs(60)
            ),
            "{url} did not load"
        );
    }

    /// The value of a JavaScript expression (promises awaited).
    pub fn eval(&mut self, page: &Page, expr: &str) -> Value {
        let r = self.call(
            Some(&page.session),
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is true, up to `timeout`.
    pub fn wait(&mut self, page: &Page, expr: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.eval(page, &format!("!!({expr})")) == json!(true) {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the page's viewport.
    pub fn screenshot(&mut self, page: &Page) -> Vec<u8> {
        let r = self.call(
            Some(&page.session),
            "Page.captureScreenshot",
            json!({ "format": "png" }),
        );
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap()
    }

    /// Every URL asked for so far (pages, scripts, event streams, fetches).
    pub fn requests(&self) -> &[String] {
        &self.requests
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
