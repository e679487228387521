//! The server's text messages, and wsbridge.conf params.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mod_wsbridge::settings::ModuleConfig;
use mod_wsbridge::wire::protocol::{mark_event, parse_control, Control};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_control(&text) {
        Ok(Control::Mark { name }) => {
            let event: serde_json::Value = serde_json::from_str(&mark_event(&name, false)).expect("valid JSON");
            assert_eq!(event["name"], name.as_str());
        }
        Ok(Control::Dtmf { digits, duration_ms }) => {
            assert!(!digits.is_empty() && (40..=5000).contains(&duration_ms));
        }
        Ok(_) | Err(_) => {}
    }
    let params: Vec<(String, String)> = text
        .split('\n')
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let _ = ModuleConfig::from_params(&params);
});
