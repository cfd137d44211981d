use crate::api::router::AppRouter;

pub fn routes(router: AppRouter) -> AppRouter {
    router
}
