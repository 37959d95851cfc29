//! The demo app in the test's own process, on a loopback port chosen by the kernel;
//! the port can be reserved first so the app starts later than what connects to it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::sync::oneshot;

/// The app's accept backlog: what the demo-app binary gets from `TcpListener::bind`
/// (the standard library's 128), as an untuned app has.
pub const APP_BACKLOG: u32 = 128;

/// A loopback port that is bound but not listening: connects are refused until
/// [`Reserved::start_app`] turns it into the app's listener.
#[derive(Debug)]
pub struct Reserved {
    socket: TcpSocket,
    /// The port.
    pub addr: SocketAddr,
}

impl Default for Reserved {
    fn default() -> Self {
        Self::new()
    }
}

impl Reserved {
    /// Binds `127.0.0.1:0` without listening.
    pub fn new() -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = socket.local_addr().expect("local addr");
        Self { socket, addr }
    }

    /// Starts the demo app on this port; it stops when the handle is dropped.
    pub fn start_app(self, config: demo_app::Config) -> AppHandle {
        let listener = self.socket.listen(APP_BACKLOG).expect("listen");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = demo_app::serve(listener, config, async {
                let _ = stopped.await;
            })
            .await;
        });
        AppHandle {
            addr: self.addr,
            _stop: stop,
        }
    }
}

/// A running demo app.
#[derive(Debug)]
pub struct AppHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// The demo app's configuration for tests: ready at once, named `test-pod`.
pub fn app_config() -> demo_app::Config {
    demo_app::Config {
        startup_delay: Duration::ZERO,
        pod: "test-pod".to_owned(),
        version: "1".to_owned(),
        ..demo_app::Config::default()
    }
}

/// Starts the demo app now.
pub fn start_app(config: demo_app::Config) -> AppHandle {
    Reserved::new().start_app(config)
}
