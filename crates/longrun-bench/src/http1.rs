//! The load generators' connection: one HTTP/1.1 keep-alive connection on hyper's own client,
//! one request at a time. The clients of `status` and `submit` share the node's two CPUs, so
//! each request's cost to them is kept small: no pool, no URL parsing, no decoding of the
//! answer beyond its status and bytes (each workload checks some of the answers).

use http::{HeaderValue, Method, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::log;

/// One HTTP/1.1 keep-alive connection, sending `authorization` with every request if set.
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
    authorization: Option<HeaderValue>,
}

impl Connection {
    /// Connects to `addr` (`host:port`), with `TCP_NODELAY` as the server sets it.
    pub async fn open(addr: &str, authorization: Option<HeaderValue>) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log!("client connection: {e}");
            }
        });
        Ok(Self {
            sender,
            host: addr.to_owned(),
            authorization,
        })
    }

    /// `GET path`: the status and the whole body.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(u16, Bytes)> {
        self.send(Method::GET, path, vec![], Bytes::new()).await
    }

    /// `POST path` with a JSON body, and a `Prefer` header if set: the status and the whole
    /// body.
    pub async fn post_json(
        &mut self,
        path: &str,
        json: Vec<u8>,
        prefer: Option<&'static str>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut headers = vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        if let Some(prefer) = prefer {
            headers.push((
                header::HeaderName::from_static("prefer"),
                HeaderValue::from_static(prefer),
            ));
        }
        self.send(Method::POST, path, headers, json.into()).await
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: Vec<(header::HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host)
            .body(Full::new(body))?;
        request.headers_mut().extend(headers);
        if let Some(authorization) = &self.authorization {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, authorization.clone());
        }
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
