//! Sealed secrets are bound to their row, and plaintext is refused where a sealed value
//! belongs (issue 18, finding 14): someone who can write the database can neither move a CA
//! key or private key to another row nor plant a plain one.

use sqlx::{Connection, Executor, Row};

use super::{DatabaseUrl, IssuerRecord, Store, StoreError, cipher, now};

fn issuer(id: &str, root_key: &str) -> IssuerRecord {
    IssuerRecord {
        id: id.into(),
        kind: "local".into(),
        root_cert_pem: Some("root cert".into()),
        root_key_pem: Some(root_key.into()),
        intermediate_cert_pem: Some("int cert".into()),
        intermediate_key_pem: Some(format!("INT-{root_key}")),
        settings: Some(r#"{"eab":{"hmac":"EAB-CANARY"}}"#.into()),
        account_credentials: None,
        account_url: None,
        health: None,
        created_at: now(),
    }
}

/// A SQLite store with issuers `a` and `b`, and a raw connection to its file.
async fn two_issuers() -> (Store, sqlx::AnyConnection, tempfile::TempDir) {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::sqlite_file(&dir.path().join("s.db"));
    let store = Store::connect(&url, cipher()).await.unwrap();
    store.insert_issuer_if_absent(&issuer("a", "KEY-OF-A")).await.unwrap();
    store.insert_issuer_if_absent(&issuer("b", "KEY-OF-B")).await.unwrap();
    let raw = sqlx::AnyConnection::connect(url.expose()).await.unwrap();
    (store, raw, dir)
}

async fn raw_value(raw: &mut sqlx::AnyConnection, column: &str, id: &str) -> Option<String> {
    let row = raw
        .fetch_one(sqlx::AssertSqlSafe(format!(
            "SELECT {column} FROM issuers WHERE id = '{id}'"
        )))
        .await
        .unwrap();
    row.try_get(0).unwrap()
}

#[tokio::test]
async fn sealed_secret_moved_to_another_row_fails_to_open() {
    let (store, mut raw, _dir) = two_issuers().await;
    assert_eq!(
        store.issuer("b").await.unwrap().unwrap().root_key_pem.as_deref(),
        Some("KEY-OF-B")
    );
    // The attack: b's CA key replaced by a's sealed one (same column, another row), e.g. to
    // make issuer b sign with a's key.
    raw.execute("UPDATE issuers SET root_key_pem = (SELECT root_key_pem FROM issuers WHERE id = 'a') WHERE id = 'b'")
        .await
        .unwrap();
    let error = store.issuer("b").await.unwrap_err();
    assert!(matches!(error, StoreError::Secrets(_)), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("issuers.root_key_pem of row b"), "{text}");
    assert!(text.contains("failed authentication"), "{text}");
    assert!(!text.contains("KEY-OF-A"), "no plaintext in errors: {text}");
    // a is untouched, and a start's rewrap does not launder the moved value.
    assert_eq!(
        store.issuer("a").await.unwrap().unwrap().root_key_pem.as_deref(),
        Some("KEY-OF-A")
    );
    store.rewrap_secrets().await.unwrap();
    assert!(store.issuer("b").await.is_err());
}

#[tokio::test]
async fn plaintext_in_sealed_column_is_refused() {
    let (store, mut raw, _dir) = two_issuers().await;
    // The attack: a CA key of the attacker's choosing, written in plain into a sealed column.
    raw.execute("UPDATE issuers SET root_key_pem = 'PLANTED-KEY' WHERE id = 'b'")
        .await
        .unwrap();
    let error = store.issuer("b").await.unwrap_err().to_string();
    assert!(error.contains("issuers.root_key_pem of row b"), "{error}");
    assert!(error.contains("plaintext in a sealed column is refused"), "{error}");
    assert!(!error.contains("PLANTED-KEY"), "{error}");
    // Nor does the start's rewrap adopt it: the database already holds sealed values.
    let error = store.rewrap_secrets().await.unwrap_err().to_string();
    assert!(
        error.contains("issuers.root_key_pem of row b holds plaintext where a sealed value is expected"),
        "{error}"
    );
    assert_eq!(
        raw_value(&mut raw, "root_key_pem", "b").await.as_deref(),
        Some("PLANTED-KEY"),
        "nothing changed"
    );
    assert!(
        raw_value(&mut raw, "root_key_pem", "a")
            .await
            .is_some_and(|v| v.starts_with("ckenc:v2:"))
    );

    // The one migration path: a database from before encryption at rest (no sealed value at
    // all) is sealed by the first start's rewrap, bound to its rows.
    raw.execute(
        "UPDATE issuers SET root_key_pem = 'LEGACY-' || id, intermediate_key_pem = NULL, settings = '{}', \
         account_credentials = NULL",
    )
    .await
    .unwrap();
    assert_eq!(store.rewrap_secrets().await.unwrap(), 4);
    for id in ["a", "b"] {
        let read = store.issuer(id).await.unwrap().unwrap();
        assert_eq!(read.root_key_pem, Some(format!("LEGACY-{id}")));
        assert!(
            raw_value(&mut raw, "root_key_pem", id)
                .await
                .is_some_and(|v| v.starts_with(&store.secret_cipher().current_prefix()))
        );
    }
    assert_eq!(store.rewrap_secrets().await.unwrap(), 0, "nothing left to do");
}
