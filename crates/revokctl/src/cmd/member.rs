//! `member list|add-learner|promote|remove`.

use std::collections::BTreeSet;

use revokd_client::Member;

use super::Ctx;
use crate::cli::MemberCommand;
use crate::error::{CliError, EXIT_OK};
use crate::output::Record;

fn member_records(members: &[Member], learners: &[Member]) -> Vec<Record> {
    members
        .iter()
        .map(|m| (m, "voter"))
        .chain(learners.iter().map(|m| (m, "learner")))
        .map(|(m, kind)| {
            Record::new()
                .field("id", m.id)
                .field("address", m.address.clone())
                .field("membership", kind)
                .field("matched_revision", m.matched_revision)
        })
        .collect()
}

/// Runs a membership subcommand and prints the resulting membership.
pub async fn run(ctx: &Ctx, m: &MemberCommand) -> Result<i32, CliError> {
    let status = ctx.client.status().await?;
    let voters: BTreeSet<u64> = status.members.iter().map(|m| m.id).collect();
    let learners: BTreeSet<u64> = status.learners.iter().map(|m| m.id).collect();
    let resp = match m {
        MemberCommand::List => {
            ctx.printer
                .print(&member_records(&status.members, &status.learners));
            return Ok(EXIT_OK);
        }
        MemberCommand::AddLearner { id, address } => {
            ctx.client.add_learner(*id, address, true).await?
        }
        MemberCommand::Promote { id } => {
            if !learners.contains(id) && !voters.contains(id) {
                return Err(CliError::Usage(format!(
                    "node {id} is not a member; add it first with `revokctl member add-learner {id} <address>`"
                )));
            }
            let mut v = voters.clone();
            v.insert(*id);
            ctx.client
                .change_membership(&v.into_iter().collect::<Vec<_>>(), false)
                .await?
        }
        MemberCommand::Remove { id } => {
            if !voters.contains(id) {
                return Err(CliError::Usage(format!(
                    "node {id} is not a voter (voters: {voters:?}); removing learners is not supported by the node API"
                )));
            }
            let v: Vec<u64> = voters.iter().copied().filter(|v| v != id).collect();
            if v.is_empty() {
                return Err(CliError::Usage("cannot remove the last voter".into()));
            }
            ctx.client.change_membership(&v, false).await?
        }
    };
    ctx.printer
        .print(&member_records(&resp.members, &resp.learners));
    Ok(EXIT_OK)
}
