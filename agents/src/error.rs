//! Errors as the console reads them. Every error type of the agent says only its own step in
//! its message and names the error it comes from as its `source`, so nothing is said twice;
//! where an error leaves the agent as text (a role's detail, a fault's error, a connection's
//! error, a log line) it is written with its whole chain, outermost first, joined by ": ".

use std::error::Error;
use std::fmt;

/// `e` and every error below it, joined by ": ".
pub fn chain(e: &(dyn Error + 'static)) -> String {
    Chain(e).to_string()
}

/// Displays an error with its whole chain (see [`chain`]), for log fields without an
/// allocation: `tracing::warn!(error = %Chain(&e), ...)`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot start the server")]
        Start(#[source] Middle),
    }

    #[derive(Debug, thiserror::Error)]
    enum Middle {
        #[error("bind TCP 7071")]
        Bind(#[source] std::io::Error),
    }

    #[test]
    fn the_chain_joins_every_level_once() {
        let e = Outer::Start(Middle::Bind(std::io::Error::other("address in use")));
        assert_eq!(
            chain(&e),
            "cannot start the server: bind TCP 7071: address in use"
        );
        assert_eq!(chain(&std::io::Error::other("alone")), "alone");
    }
}
