//! A real FreeSWITCH for the tests: a temporary config bound to 127.0.0.1,
//! its own ports, and a module dir holding the freshly built mod_wsbridge.so.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::esl::Esl;

pub const PASSWORD: &str = "ClueCon";

/// What the launcher needs to know of the crate under test: where its
/// sources are (to build the module and read the sample configs) and where
/// its build script found FreeSWITCH. These are compile-time values of that
/// crate's own targets, so they are read there, with [`build_env!`].
#[derive(Debug, Clone, Copy)]
pub struct BuildEnv {
    /// The cargo that builds the caller (`env!("CARGO")`).
    pub cargo: &'static str,
    /// The root crate's directory: its Cargo.toml, dialplan/ and autoload_configs/.
    pub manifest_dir: &'static str,
    /// FreeSWITCH's install prefix (`WSBRIDGE_FS_PREFIX`, from the root crate's build.rs).
    pub freeswitch_prefix: &'static str,
    /// FreeSWITCH's modules directory (`WSBRIDGE_FS_MODULES_DIR`, likewise).
    pub freeswitch_modules_dir: &'static str,
}

/// The [`BuildEnv`] of the crate whose test or bench target expands it.
#[macro_export]
macro_rules! build_env {
    () => {
        $crate::BuildEnv {
            cargo: env!("CARGO"),
            manifest_dir: env!("CARGO_MANIFEST_DIR"),
            freeswitch_prefix: env!("WSBRIDGE_FS_PREFIX"),
            freeswitch_modules_dir: env!("WSBRIDGE_FS_MODULES_DIR"),
        }
    };
}

pub struct FreeSwitch {
    pub dir: PathBuf,
    pub esl_port: u16,
    pub sip_port: u16,
    child: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl BuildEnv {
    /// The module, freshly built: `cargo test` builds the library only as an
    /// rlib for the tests, so the cdylib is brought up to date here.
    pub fn built_module(&self) -> PathBuf {
        self.built(&["--lib"], "libmod_wsbridge.so")
    }

    /// The demo server (a workspace crate of its own), freshly built beside the module.
    pub fn built_demo(&self) -> PathBuf {
        self.built(&["-p", "wsbridge-demo"], "wsbridge-demo")
    }

    /// `cargo build <what>` into the caller's own target directory and profile; the path of `artifact` there.
    fn built(&self, what: &[&str], artifact: &str) -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
        let target_dir = profile_dir.parent().expect("target dir");
        let mut build = Command::new(self.cargo);
        build
            .arg("build")
            .args(what)
            .arg("--manifest-path")
            .arg(Path::new(self.manifest_dir).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "cargo build {} failed", what.join(" "));
        let built = profile_dir.join(artifact);
        assert!(built.exists(), "{} is missing after cargo build", built.display());
        built
    }

    /// A file of the root crate, such as `dialplan/wsbridge.xml`.
    pub fn repo_file(&self, path: &str) -> String {
        let full = Path::new(self.manifest_dir).join(path);
        fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
    }
}

/// Strips the XML declaration and the `<include>` wrapper, as FreeSWITCH's
/// own X-PRE-PROCESS include does, so a sample file can be inlined.
fn inline_xml(text: &str) -> String {
    text.lines()
        .filter(|line| {
            let line = line.trim();
            !(line.starts_with("<?xml") || line == "<include>" || line == "</include>")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn config(
    build: &BuildEnv,
    dir: &Path,
    esl_port: u16,
    sip_port: u16,
    rtp_start: u16,
    ws_base: &str,
    log_level: &str,
) -> String {
    let log = dir.join("log").display().to_string();
    let recordings = dir.join("recordings").display().to_string();
    let samples = inline_xml(&build.repo_file("dialplan/wsbridge.xml"));
    let wsbridge_conf = inline_xml(&build.repo_file("autoload_configs/wsbridge.conf.xml"));
    format!(
        r#"<?xml version="1.0"?>
<document type="freeswitch/xml">
  <X-PRE-PROCESS cmd="set" data="wsbridge_server={ws_base}"/>
  <section name="configuration" description="">
    <configuration name="switch.conf" description="core">
      <settings>
        <param name="colorize-console" value="false"/>
        <param name="loglevel" value="{log_level}"/>
        <param name="max-sessions" value="2000"/>
        <param name="sessions-per-second" value="2000"/>
        <param name="rtp-start-port" value="{rtp_start}"/>
        <param name="rtp-end-port" value="{rtp_end}"/>
        <param name="dump-cores" value="yes"/>
      </settings>
    </configuration>
    <configuration name="modules.conf" description="modules">
      <modules>
        <load module="mod_logfile"/>
        <load module="mod_event_socket"/>
        <load module="mod_commands"/>
        <load module="mod_dptools"/>
        <load module="mod_dialplan_xml"/>
        <load module="mod_loopback"/>
        <load module="mod_sndfile"/>
        <load module="mod_tone_stream"/>
        <load module="mod_sofia"/>
        <load module="mod_wsbridge"/>
      </modules>
    </configuration>
    <configuration name="logfile.conf" description="log">
      <settings><param name="rotate-on-hup" value="true"/></settings>
      <profiles><profile name="default"><settings>
        <param name="logfile" value="{log}/freeswitch.log"/>
        <param name="uuid" value="true"/>
      </settings><mappings><map name="all" value="debug,info,notice,warning,err,crit,alert"/></mappings></profile></profiles>
    </configuration>
    <!-- wsbridge.conf begin -->
{wsbridge_conf}
    <!-- wsbridge.conf end -->
    <configuration name="event_socket.conf" description="esl">
      <settings>
        <param name="listen-ip" value="127.0.0.1"/>
        <param name="listen-port" value="{esl_port}"/>
        <param name="password" value="{PASSWORD}"/>
      </settings>
    </configuration>
    <configuration name="sofia.conf" description="sip">
      <global_settings><param name="log-level" value="0"/></global_settings>
      <profiles>
        <profile name="test">
          <settings>
            <param name="sip-ip" value="127.0.0.1"/>
            <param name="rtp-ip" value="127.0.0.1"/>
            <param name="ext-sip-ip" value="127.0.0.1"/>
            <param name="ext-rtp-ip" value="127.0.0.1"/>
            <param name="sip-port" value="{sip_port}"/>
            <param name="context" value="wsbridge-test"/>
            <param name="dialplan" value="XML"/>
            <param name="auth-calls" value="false"/>
            <param name="inbound-codec-prefs" value="PCMU"/>
            <param name="outbound-codec-prefs" value="PCMU"/>
            <param name="dtmf-type" value="rfc2833"/>
            <!-- accept SIP INFO digits too, so both kinds can be tested -->
            <param name="liberal-dtmf" value="true"/>
            <param name="manage-presence" value="false"/>
            <param name="rtp-timer-name" value="soft"/>
            <param name="apply-nat-acl" value=""/>
          </settings>
        </profile>
      </profiles>
    </configuration>
  </section>
  <section name="dialplan" description="dialplan">
    <context name="wsbridge-test">
      <extension name="record_and_bridge">
        <condition field="destination_number" expression="^record_and_bridge$">
          <action application="bridge" data="wsbridge"/>
        </condition>
      </extension>
      <!-- originate's "&app(args)" cuts args at the first ')', so tones are played from here -->
      <extension name="tone">
        <condition field="destination_number" expression="^tone_(\d+)ms$">
          <action application="playback" data="tone_stream://%($1,0,1000)"/>
        </condition>
      </extension>
      <!-- Calls from the WebSocket side (the listener's context in its tests). -->
      <extension name="listener_tone">
        <condition field="destination_number" expression="^listener_tone$">
          <action application="answer"/>
          <action application="set" data="RECORD_READ_ONLY=true"/>
          <action application="record_session" data="{recordings}/listener_${{wsbridge_in_tag}}.wav"/>
          <action application="playback" data="tone_stream://%(3000,0,1000)"/>
          <action application="hangup"/>
        </condition>
      </extension>
      <extension name="listener_hold">
        <condition field="destination_number" expression="^listener_hold_(\d+)$">
          <action application="answer"/>
          <action application="playback" data="tone_stream://%($1,0,1000)"/>
          <action application="hangup"/>
        </condition>
      </extension>
      <extension name="listener_to_sip">
        <condition field="destination_number" expression="^listener_sip_(\w+)$">
          <action application="bridge" data="{{absolute_codec_string=PCMU}}sofia/test/listener_answer_$1@127.0.0.1:{sip_port}"/>
        </condition>
      </extension>
      <extension name="listener_answer">
        <condition field="destination_number" expression="^listener_answer_(\w+)$">
          <action application="ring_ready"/>
          <action application="sleep" data="300"/>
          <action application="answer"/>
          <action application="set" data="RECORD_READ_ONLY=true"/>
          <action application="record_session" data="{recordings}/listener_sip_$1.wav"/>
          <action application="playback" data="tone_stream://%(3000,0,1000)"/>
          <action application="hangup"/>
        </condition>
      </extension>
      <!-- A SIP call whose INVITE carries P-wsbridge-* headers. The tests' servers are on
           127.0.0.1, which a SIP header's URI may not reach, so this dialplan takes the
           header's URI as its own (a dialplan-set URI is the operator's): the other
           headers are still read from the INVITE. -->
      <extension name="sip_to_wsbridge">
        <condition field="destination_number" expression="^sip_to_wsbridge$">
          <action application="set" data="P-wsbridge-websocket-uri=${{sip_h_P-wsbridge-websocket-uri}}"/>
          <action application="bridge" data="wsbridge"/>
        </condition>
      </extension>
      <!-- The same with the URI left as the INVITE's header: the caller's choice. -->
      <extension name="sip_header_uri_to_wsbridge">
        <condition field="destination_number" expression="^sip_header_uri_to_wsbridge$">
          <action application="bridge" data="wsbridge"/>
        </condition>
      </extension>
      <!-- fork tests: a caller's tone (fork_tone_N, or fork_tone_rec_N recording what it hears)
           bridged to an agent's tone through loopback legs; fork_bridge_app_N forks from the dialplan -->
      <extension name="fork_tone">
        <condition field="destination_number" expression="^fork_tone_(\d+)$">
          <action application="answer"/>
          <action application="playback" data="tone_stream://%(600000,0,$1)"/>
        </condition>
      </extension>
      <extension name="fork_tone_rec">
        <condition field="destination_number" expression="^fork_tone_rec_(\d+)$">
          <action application="answer"/>
          <action application="set" data="RECORD_READ_ONLY=true"/>
          <action application="record_session" data="${{fork_record}}"/>
          <action application="playback" data="tone_stream://%(600000,0,$1)"/>
        </condition>
      </extension>
      <extension name="fork_bridge">
        <condition field="destination_number" expression="^fork_bridge_(\d+)$">
          <action application="bridge" data="{{loopback_bowout=false}}loopback/fork_tone_$1/wsbridge-test"/>
        </condition>
      </extension>
      <extension name="fork_bridge_app">
        <condition field="destination_number" expression="^fork_bridge_app_(\d+)$">
          <action application="wsbridge_fork" data="${{fork_args}}"/>
          <action application="bridge" data="{{loopback_bowout=false}}loopback/fork_tone_$1/wsbridge-test"/>
        </condition>
      </extension>
    </context>
    <context name="wsbridge-examples">
{samples}
    </context>
  </section>
</document>
"#,
        rtp_end = rtp_start + 1998,
    )
}

impl FreeSwitch {
    /// `instance` tells apart several FreeSWITCHes of one test run.
    pub fn start(build: &BuildEnv, ws_base: &str, instance: u16) -> FreeSwitch {
        Self::start_with_log_level(build, ws_base, instance, "debug")
    }

    /// The benchmark logs only warnings and worse, so logging is not what it measures.
    pub fn start_with_log_level(build: &BuildEnv, ws_base: &str, instance: u16, log_level: &str) -> FreeSwitch {
        Self::launch(build, ws_base, instance, log_level, &[], None)
    }

    /// With variables added to FreeSWITCH's environment, such as `GLIBC_TUNABLES`.
    pub fn start_with_env(build: &BuildEnv, ws_base: &str, instance: u16, env: &[(&str, &str)]) -> FreeSwitch {
        Self::launch(build, ws_base, instance, "debug", env, None)
    }

    /// Loading `module` (linked into its module dir) instead of the freshly built one,
    /// such as the module of an extracted package.
    pub fn start_with_module(build: &BuildEnv, ws_base: &str, instance: u16, module: &Path) -> FreeSwitch {
        Self::launch(build, ws_base, instance, "debug", &[], Some(module))
    }

    /// Both: `module` (if any) as mod_wsbridge, logging only at `log_level` and
    /// worse (the benchmark's `--module`).
    pub fn start_with_module_and_log_level(
        build: &BuildEnv,
        ws_base: &str,
        instance: u16,
        module: Option<&Path>,
        log_level: &str,
    ) -> FreeSwitch {
        Self::launch(build, ws_base, instance, log_level, &[], module)
    }

    fn launch(
        build: &BuildEnv,
        ws_base: &str,
        instance: u16,
        log_level: &str,
        env: &[(&str, &str)],
        module: Option<&Path>,
    ) -> FreeSwitch {
        let binary = Path::new(build.freeswitch_prefix).join("bin/freeswitch");
        assert!(binary.exists(), "{} is missing", binary.display());
        let dir = std::env::temp_dir().join(format!("wsbridge-test-{}-{instance}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for sub in ["conf", "log", "db", "run", "temp", "mod", "recordings"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        // FreeSWITCH's own modules, plus ours under its real name.
        for entry in fs::read_dir(build.freeswitch_modules_dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".so") && name != "mod_wsbridge.so" {
                std::os::unix::fs::symlink(&path, dir.join("mod").join(&name)).unwrap();
            }
        }
        match module {
            Some(module) => std::os::unix::fs::symlink(module, dir.join("mod/mod_wsbridge.so")).unwrap(),
            None => {
                fs::copy(build.built_module(), dir.join("mod/mod_wsbridge.so")).unwrap();
            }
        }

        let esl_port = free_port();
        let sip_port = free_port();
        let rtp_start = 20000 + ((std::process::id() % 10) as u16 * 2 + instance % 2) * 2000;
        let config = config(build, &dir, esl_port, sip_port, rtp_start, ws_base, log_level);
        fs::write(dir.join("conf/freeswitch.xml"), config).unwrap();

        let arg = |sub: &str| dir.join(sub).display().to_string();
        let child = Command::new(&binary)
            .args(["-nf", "-nc", "-nonat"])
            .args(["-conf", &arg("conf"), "-log", &arg("log"), "-db", &arg("db"), "-run", &arg("run")])
            .args(["-temp", &arg("temp"), "-mod", &arg("mod"), "-recordings", &arg("recordings")])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("log/stdout.txt")).unwrap())
            .stderr(fs::File::create(dir.join("log/stderr.txt")).unwrap())
            .spawn()
            .expect("starting freeswitch");
        let mut instance = FreeSwitch { dir, esl_port, sip_port, child };
        instance.wait_ready();
        instance
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("FreeSWITCH exited during start-up ({status}); see {}", self.dir.join("log").display());
            }
            if let Ok(mut esl) = Esl::connect(self.esl_port, PASSWORD) {
                if esl.api("status").contains("is ready") && esl.api("sofia status").contains("RUNNING") {
                    let loaded = esl.api("module_exists mod_wsbridge");
                    assert_eq!(
                        loaded.trim(),
                        "true",
                        "mod_wsbridge did not load; see {}",
                        self.dir.join("log").display()
                    );
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("FreeSWITCH not ready within 60 s; see {}", self.dir.join("log").display());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn esl(&self) -> Esl {
        Esl::connect(self.esl_port, PASSWORD).expect("event socket")
    }

    pub fn version(&self) -> String {
        self.esl().api("version").trim().to_string()
    }

    /// Replaces the wsbridge.conf section of the running config (then `reloadxml`).
    pub fn set_wsbridge_conf(&self, params: &str) {
        self.set_wsbridge_conf_sections(params, "");
    }

    /// As [`FreeSwitch::set_wsbridge_conf`], with more sections after `<settings>`
    /// (such as `<listen-tokens>`).
    pub fn set_wsbridge_conf_sections(&self, params: &str, sections: &str) {
        let path = self.dir.join("conf/freeswitch.xml");
        let text = fs::read_to_string(&path).unwrap();
        let begin = text.find("<!-- wsbridge.conf begin -->").unwrap();
        let end = text.find("<!-- wsbridge.conf end -->").unwrap();
        let section = format!(
            "<!-- wsbridge.conf begin -->\n<configuration name=\"wsbridge.conf\" description=\"test\"><settings>{params}</settings>{sections}</configuration>\n"
        );
        fs::write(&path, format!("{}{section}{}", &text[..begin], &text[end..])).unwrap();
    }

    /// Adds `xml` (such as a `<configuration>` or a dialplan `<context>`) to the
    /// running config just before `before`, a line of it (then `reloadxml`).
    pub fn add_to_config(&self, before: &str, xml: &str) {
        let path = self.dir.join("conf/freeswitch.xml");
        let text = fs::read_to_string(&path).unwrap();
        let at = text.find(before).unwrap_or_else(|| panic!("{before} is not in the config"));
        fs::write(&path, format!("{}{xml}\n{}", &text[..at], &text[at..])).unwrap();
    }

    /// Where it loads modules from: `load` finds a module copied here.
    pub fn mod_dir(&self) -> PathBuf {
        self.dir.join("mod")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log/freeswitch.log")
    }

    /// Shuts FreeSWITCH down; true when it exited by itself, cleanly.
    pub fn stop(mut self) -> bool {
        if let Ok(mut esl) = Esl::connect(self.esl_port, PASSWORD) {
            let _ = esl.command("bgapi fsctl shutdown");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for FreeSwitch {
    /// A test run that fails half-way must not leave FreeSWITCH running.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
