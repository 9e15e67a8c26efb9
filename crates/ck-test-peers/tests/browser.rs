//! The browser peer against the real chromedriver and headless Chromium: a page served on
//! 127.0.0.1 is read, clicked and screenshotted over WebDriver with fantoccini, at desktop and
//! phone sizes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use ck_test_peers::browser::{ChromeDriver, screenshot_dir};
use fantoccini::{Client, ClientBuilder, Locator};

/// The page under test: text to read, a button whose inline handler changes it, and the
/// viewport size as the page sees it.
const PAGE: &str = r#"<!doctype html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>certkeeper peer smoke</title>
<style>body { font-family: sans-serif; margin: 2em; } button { font-size: 1.5em; }</style>
</head>
<body>
<h1 id="greeting">Hello from certkeeper</h1>
<p id="status">waiting</p>
<button id="go" onclick="document.getElementById('status').textContent = 'clicked'">Go</button>
</body>
</html>
"#;

/// Serves [`PAGE`] for `/` and 404 for anything else (the favicon) on a free 127.0.0.1 port,
/// one thread per connection, for as long as the test process lives.
fn serve_page() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let port = listener.local_addr().expect("a bound listener has an address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    port
}

/// Reads one request head and answers it, closing the connection: enough for a browser, which
/// opens another connection for the next request. Chromium also opens connections it never
/// uses (preconnects): the read timeout ends those.
fn answer(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let (status, body) = if head.starts_with("GET / ") {
        ("200 OK", PAGE)
    } else {
        ("404 Not Found", "not here\n")
    };
    let content_type = if status.starts_with("200") {
        "text/html; charset=utf-8"
    } else {
        "text/plain"
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

type Capabilities = serde_json::Map<String, serde_json::Value>;

async fn session(driver: &ChromeDriver, capabilities: Capabilities) -> Client {
    ClientBuilder::rustls()
        .expect("rustls connector")
        .capabilities(capabilities)
        .connect(&driver.url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no WebDriver session: {e}\n---- chromedriver ----\n{}",
                driver.log_text()
            )
        })
}

/// The width and height in a PNG's IHDR chunk, after checking the PNG signature.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() > 24, "a PNG is longer than {} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR", "a PNG starts with its IHDR chunk");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("four bytes"));
    (be(16), be(20))
}

/// Opens the page in a session with `capabilities` for a `width`×`height` viewport, checks what
/// the page sees, clicks, and saves a screenshot as `<screenshot_dir>/<name>.png`.
async fn read_click_and_screenshot(
    driver: &ChromeDriver,
    port: u16,
    (width, height): (u32, u32),
    capabilities: Capabilities,
    touch: bool,
    name: &str,
) {
    let client = session(driver, capabilities).await;
    client
        .goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .expect("the page loads");
    assert_eq!(client.title().await.expect("a title"), "certkeeper peer smoke");

    let greeting = client.find(Locator::Id("greeting")).await.expect("the heading");
    assert_eq!(greeting.text().await.expect("its text"), "Hello from certkeeper");
    let status = client.find(Locator::Css("#status")).await.expect("the status line");
    assert_eq!(status.text().await.expect("its text"), "waiting");

    client
        .find(Locator::Id("go"))
        .await
        .expect("the button")
        .click()
        .await
        .expect("a click");
    assert_eq!(status.text().await.expect("its text"), "clicked");

    let seen = client
        .execute(
            "return [window.innerWidth, window.innerHeight, navigator.maxTouchPoints > 0];",
            vec![],
        )
        .await
        .expect("a script result");
    assert_eq!(
        seen,
        serde_json::json!([width, height, touch]),
        "viewport and touch as the page sees them"
    );

    let png = client.screenshot().await.expect("a screenshot");
    assert_eq!(png_size(&png), (width, height), "screenshot size");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, &png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));

    client.close().await.expect("the session ends");
}

#[tokio::test]
async fn chromium_reads_clicks_and_screenshots_at_desktop_and_phone_sizes() {
    let test = "chromium_reads_clicks_and_screenshots_at_desktop_and_phone_sizes";
    let Some(driver) = ChromeDriver::start(test) else {
        return;
    };
    let port = serve_page();
    let desktop = driver.capabilities(1280, 800);
    read_click_and_screenshot(&driver, port, (1280, 800), desktop, false, "peer-smoke").await;
    // Narrower than the 500 px headless Chromium allows a window: the viewport still is 390.
    let narrow = driver.capabilities(390, 844);
    read_click_and_screenshot(&driver, port, (390, 844), narrow, false, "peer-smoke-narrow").await;
    let phone = driver.phone_capabilities(390, 844);
    read_click_and_screenshot(&driver, port, (390, 844), phone, true, "peer-smoke-phone").await;
}
