/// `get_ref`, `get_mut` and `into_inner` for a middleware whose inner service is `self.inner`,
/// as every tower-http middleware has them.
macro_rules! define_inner_service_accessors {
    () => {
        /// A reference to the inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// A mutable reference to the inner service.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// The inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

/// The public response future of a layer that buffers before deciding: a wrapper around
/// [`Step`](crate::buffered::Step) with the layer's own [`Decide`](crate::buffered::Decide).
#[cfg_attr(not(any(feature = "auth", feature = "validate")), allow(unused_macros))]
macro_rules! buffered_response_future {
    ($(#[$doc:meta])* $decide:ty) => {
        pin_project_lite::pin_project! {
            $(#[$doc])*
            pub struct ResponseFuture<S, B>
            where
                S: tower_service::Service<http::Request<crate::body::MaasBody<B>>>,
                B: http_body::Body,
                B::Error: Into<crate::body::BoxError>,
            {
                #[pin]
                step: crate::buffered::Step<S, B, $decide>,
            }
        }

        impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
        where
            S: tower_service::Service<http::Request<crate::body::MaasBody<B>>>,
            B: http_body::Body,
            B::Error: Into<crate::body::BoxError>,
        {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("ResponseFuture").finish_non_exhaustive()
            }
        }

        impl<S, B, ResBody> std::future::Future for ResponseFuture<S, B>
        where
            S: tower_service::Service<
                http::Request<crate::body::MaasBody<B>>,
                Response = http::Response<ResBody>,
            >,
            B: http_body::Body,
            B::Error: Into<crate::body::BoxError>,
        {
            type Output =
                Result<http::Response<crate::body::MaasBody<ResBody>>, S::Error>;

            fn poll(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Self::Output> {
                self.project().step.poll_step(cx)
            }
        }
    };
}
