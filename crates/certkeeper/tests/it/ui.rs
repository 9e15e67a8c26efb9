//! The web UI in a real headless Chromium (Debian `chromium` + `chromium-driver`, driven over
//! WebDriver with fantoccini): an operator signs in, creates a certificate, watches it become
//! active, revokes it and finds the audit entry; a read-only token is not offered the actions
//! and is refused when it forces them. Every main page is saved as a screenshot at desktop and
//! phone sizes into `target/ui-screenshots/`.

use std::time::{Duration, Instant};

use ck_test_peers::browser::{ChromeDriver, screenshot_dir};
use fantoccini::{Client, ClientBuilder, Locator};

use crate::support::Server;

async fn browser(driver: &ChromeDriver, phone: bool) -> Client {
    let capabilities = if phone {
        driver.phone_capabilities(390, 844)
    } else {
        driver.capabilities(1280, 800)
    };
    ClientBuilder::rustls()
        .expect("TLS roots for the WebDriver client")
        .capabilities(capabilities)
        .connect(&driver.url())
        .await
        .unwrap_or_else(|e| panic!("no browser session: {e}\n{}", driver.log_text()))
}

async fn sign_in(client: &Client, server: &Server, token: &str) {
    client.goto(&format!("{}/ui", server.url)).await.unwrap();
    client
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    press(client, "form button[type=submit]").await;
}

async fn heading(client: &Client) -> String {
    client
        .find(Locator::Css("main h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn body_text(client: &Client) -> String {
    client.find(Locator::Css("body")).await.unwrap().text().await.unwrap()
}

async fn shot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// Clicks a (submit) button found by CSS and waits until the next page has replaced this one:
/// the old document's root goes stale, then the new page's heading is there.
async fn press(client: &Client, css: &str) {
    let old_root = client.find(Locator::Css("html")).await.unwrap();
    client.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while old_root.tag_name().await.is_ok() {
        assert!(Instant::now() < deadline, "pressing {css} did not load a new page");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("main h1"))
        .await
        .unwrap();
}

#[test]
fn operator_flow_in_a_real_browser_and_read_only_limits() {
    let Some(driver) = ChromeDriver::start("ui_operator_flow") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let admin = server.token();
    let viewer = server
        .cli_ok(&["token", "create", "--name", "viewer", "--scope", "read"])
        .lines()
        .find_map(|line| line.split_whitespace().find(|word| word.starts_with("ck_")))
        .unwrap()
        .to_owned();
    // Something on every page: two more certificates, one of them revoked, a dead-free list.
    server.cli_ok(&["cert", "create", "api.shop.internal", "--wait"]);
    server.cli_ok(&["agents", "add", "web-1"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = browser(&driver, false).await;
        // A wrong token is refused on the form, without a session.
        client.goto(&format!("{}/ui", server.url)).await.unwrap();
        shot(&client, "login-desktop").await;
        client
            .find(Locator::Id("token"))
            .await
            .unwrap()
            .send_keys("ck_nope_nope")
            .await
            .unwrap();
        press(&client, "form button[type=submit]").await;
        assert!(
            body_text(&client).await.contains("not valid"),
            "{}",
            body_text(&client).await
        );

        sign_in(&client, &server, &admin).await;
        assert_eq!(heading(&client).await, "Dashboard");

        // Create a certificate through the form: a bad name first, then a good one.
        client
            .goto(&format!("{}/ui/certificates/new", server.url))
            .await
            .unwrap();
        client
            .find(Locator::Id("common_name"))
            .await
            .unwrap()
            .send_keys("bad_name")
            .await
            .unwrap();
        press(&client, "form.form button[type=submit]").await;
        let error = client
            .find(Locator::Css("p.error"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(error.contains("invalid character"), "{error}");
        let field = client.find(Locator::Id("common_name")).await.unwrap();
        assert_eq!(
            field.prop("value").await.unwrap().as_deref(),
            Some("bad_name"),
            "what was typed stays"
        );
        field.clear().await.unwrap();
        field.send_keys("www.shop.internal").await.unwrap();
        client
            .find(Locator::Id("labels"))
            .await
            .unwrap()
            .send_keys("team=web")
            .await
            .unwrap();
        shot(&client, "new-certificate-desktop").await;
        press(&client, "form.form button[type=submit]").await;
        assert_eq!(heading(&client).await, "www.shop.internal");
        let detail_url = client.current_url().await.unwrap();

        // It becomes active (the issue job runs in a moment).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            client.goto(detail_url.as_str()).await.unwrap();
            let status = client
                .find(Locator::Css(".facts dd .badge"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if status == "active" {
                break;
            }
            assert!(Instant::now() < deadline, "still {status}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        shot(&client, "certificate-desktop").await;
        // The key and chain as PKCS#12 (server-made key, admin token): openssl reads it back.
        let session = client.get_named_cookie("ck_session").await.unwrap().value().to_owned();
        let csrf = client
            .find(Locator::Css("form.export input[name=csrf]"))
            .await
            .unwrap()
            .attr("value")
            .await
            .unwrap()
            .unwrap();
        let p12 = dir.path().join("www.p12");
        let export = |password: &str, out: &std::path::Path| {
            let answer = std::process::Command::new("curl")
                .args(["-s", "-o"])
                .arg(out)
                .args(["-w", "%{http_code}", "-b"])
                .arg(format!("ck_session={session}"))
                .arg("-d")
                .arg(format!("csrf={csrf}&password={password}"))
                .arg(format!("{}{}/export.p12", server.url, detail_url.path()))
                .output()
                .unwrap();
            String::from_utf8_lossy(&answer.stdout).into_owned()
        };
        assert_eq!(export("short", &dir.path().join("refused.html")), "400");
        assert_eq!(export("s3cret-pass", &p12), "200");
        let read = std::process::Command::new("openssl")
            .args(["pkcs12", "-info", "-nokeys", "-passin", "pass:s3cret-pass", "-in"])
            .arg(&p12)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&read.stdout);
        assert!(read.status.success() && text.contains("www.shop.internal"), "{text}");

        // Revoke it with a reason; the page says so and the audit trail has the entry.
        client
            .find(Locator::Id("reason"))
            .await
            .unwrap()
            .select_by_value("keyCompromise")
            .await
            .unwrap();
        press(&client, "form.revoke button").await;
        let text = body_text(&client).await;
        assert!(text.contains("Revoked."), "{text}");
        assert_eq!(
            client
                .find(Locator::Css(".facts dd .badge"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            "revoked"
        );
        let audit = client
            .find(Locator::Css("#audit-h + .scroll table"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            audit.contains("certificate.revoke") && audit.contains("keyCompromise"),
            "{audit}"
        );
        client
            .goto(&format!("{}/ui/audit?action=certificate.", server.url))
            .await
            .unwrap();
        assert!(body_text(&client).await.contains("certificate.revoke"));

        // Every main page, at desktop size.
        for (path, name) in [
            ("", "dashboard"),
            ("/certificates", "certificates"),
            ("/issuers", "issuers"),
            ("/agents", "agents"),
            ("/jobs", "jobs"),
            ("/tokens", "tokens"),
            ("/audit", "audit"),
            ("/notifications", "notifications"),
        ] {
            client.goto(&format!("{}/ui{path}", server.url)).await.unwrap();
            shot(&client, &format!("{name}-desktop")).await;
        }
        // Sign out: the session is gone.
        press(&client, "form.who button").await;
        client.goto(&format!("{}/ui/certificates", server.url)).await.unwrap();
        assert!(client.current_url().await.unwrap().path().ends_with("/ui/login"));
        client.close().await.unwrap();

        // The same pages on a phone.
        let phone = browser(&driver, true).await;
        sign_in(&phone, &server, &admin).await;
        for (path, name) in [
            ("", "dashboard"),
            ("/certificates", "certificates"),
            ("/certificates/new", "new-certificate"),
            ("/tokens", "tokens"),
            ("/audit", "audit"),
        ] {
            phone.goto(&format!("{}/ui{path}", server.url)).await.unwrap();
            shot(&phone, &format!("{name}-phone")).await;
        }
        phone.goto(detail_url.as_str()).await.unwrap();
        shot(&phone, "certificate-phone").await;
        phone.close().await.unwrap();

        // A read-only token: no actions offered, and forcing one is refused.
        let reader = browser(&driver, false).await;
        sign_in(&reader, &server, &viewer).await;
        reader.goto(&format!("{}/ui/certificates", server.url)).await.unwrap();
        assert!(reader.find(Locator::LinkText("New certificate")).await.is_err());
        let listed = body_text(&reader).await;
        assert!(listed.contains("api.shop.internal"), "{listed}");
        reader
            .find(Locator::LinkText("api.shop.internal"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        reader
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(".facts"))
            .await
            .unwrap();
        assert!(
            reader.find(Locator::Css("form.revoke")).await.is_err(),
            "no revoke for read-only"
        );
        assert!(
            reader.find(Locator::Css("form[action$='/renew']")).await.is_err(),
            "no renew for read-only"
        );
        let page_url = reader.current_url().await.unwrap();
        let cookie = reader.get_named_cookie("ck_session").await.unwrap();
        let csrf = reader
            .find(Locator::Css("input[name=csrf]"))
            .await
            .unwrap()
            .attr("value")
            .await
            .unwrap()
            .unwrap();
        let forced = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-b"])
            .arg(format!("ck_session={}", cookie.value()))
            .arg("-d")
            .arg(format!("csrf={csrf}&reason=superseded"))
            .arg(format!("{}{}/revoke", server.url, page_url.path()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&forced.stdout), "403");
        // The admin pages are not in the navigation, and refused when typed.
        assert!(reader.find(Locator::LinkText("Tokens")).await.is_err());
        reader.goto(&format!("{}/ui/tokens", server.url)).await.unwrap();
        assert_eq!(heading(&reader).await, "Not allowed");
        reader.close().await.unwrap();
    });
    let listed = server.cli_ok(&["cert", "list", "--json"]);
    assert!(listed.contains("\"revoked\""), "{listed}");
}
