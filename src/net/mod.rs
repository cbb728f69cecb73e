//! Listeners: accepting connections, ending TLS within a deadline, handing each stream to the
//! HTTP/1.1 or HTTP/2 server with the request pipeline (`http::service`) as the service, and
//! the plain-HTTP admin listener.

pub mod admin;
pub mod coalesce;
pub mod limits;
pub mod server;
pub mod side_listener;
pub mod tls;
pub mod workers;
