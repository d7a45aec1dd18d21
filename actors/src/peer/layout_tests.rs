//! The peer actor following the layout, through its messages: a joining node (its
//! layout does not name it) serves the member that dials it once a layout names it,
//! learns that member's stamp from its `Hello`, and can call it back; a removed member's
//! connection is closed.

use std::sync::Arc;

use super::*;
use crate::layout::{Layout, LayoutChange, LayoutChanged, LayoutMember, LayoutPlacement};

/// Collects the stamps the peer actor reports.
#[derive(Default)]
struct Watcher {
    seen: Vec<(NodeId, LayoutStamp)>,
}

impl Actor for Watcher {
    type Context = Context<Self>;
}

impl Handler<PeerLayoutSeen> for Watcher {
    type Result = ();
    fn handle(&mut self, m: PeerLayoutSeen, _ctx: &mut Context<Self>) {
        self.seen.push((m.peer, m.stamp));
    }
}

#[derive(Message)]
#[rtype(result = "Vec<(NodeId, LayoutStamp)>")]
struct Stamps;

impl Handler<Stamps> for Watcher {
    type Result = MessageResult<Stamps>;
    fn handle(&mut self, _m: Stamps, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.seen.clone())
    }
}

fn start_watched(identity: TlsIdentity, watcher: &Addr<Watcher>) -> Node {
    let h = handler(None);
    let config = PeerConfig {
        listen: any_port(),
        members: vec![],
        limits: FrameLimits::default(),
        layout_digest: digest(),
    };
    let actor = PeerActor::with_tuning(config, tuning(), identity.clone(), h.clone().recipient())
        .unwrap()
        .with_layout_watcher(watcher.clone().recipient());
    Node {
        id: actor.node_id(),
        addr: actor.local_addr(),
        peer: actor.start(),
        handler: h,
        identity,
    }
}

fn changed(layout: Layout) -> LayoutChanged {
    LayoutChanged {
        placement: Arc::new(LayoutPlacement::new(&layout)),
        layout: Arc::new(layout),
        agreed: true,
        disagreeing: Vec::new(),
    }
}

fn layout_member(n: &Node) -> LayoutMember {
    LayoutMember {
        id: n.id,
        addr: n.addr,
        zone: "z".into(),
        capacity: 1,
    }
}

#[actix_rt::test]
async fn a_joining_node_is_dialled_once_a_layout_names_it_and_learns_the_stamp() {
    let mut certs = Certs::new();
    let (wa, wj) = (Watcher::default().start(), Watcher::default().start());
    let a = start_watched(certs.node(), &wa);
    let j = start_watched(certs.node(), &wj);
    let v1 = Layout::initial(vec![layout_member(&a)], 1).unwrap();
    a.peer.send(changed(v1.clone())).await.unwrap();
    j.peer.send(changed(Layout::empty())).await.unwrap();

    let v2 = v1
        .with_changes(&[LayoutChange::Assign {
            id: j.id,
            addr: j.addr,
            zone: "z".into(),
            capacity: 1,
        }])
        .unwrap();
    a.peer.send(changed(v2.clone())).await.unwrap();

    // A dials J (now a member); J serves it and hears A's stamp in its Hello.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = wj.send(Stamps).await.unwrap();
        if seen.iter().any(|(p, s)| *p == a.id && *s == v2.stamp()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the joining node never heard A's layout v2 (saw {seen:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // J added A at the address it came from and can call it (the way it fetches the
    // layout).
    wait_up(&j.peer, a.id, Duration::from_secs(5)).await;
    let r = j
        .peer
        .send(call(a.id, BlockRpc::LayoutQuery, Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(r.is_ok(), "J's call to A failed: {r:?}");

    // J takes v2 (it is named now).
    j.peer.send(changed(v2.clone())).await.unwrap();
    wait_up(&a.peer, j.id, Duration::from_secs(5)).await;
    // J's pings carry its new stamp to A.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = status_of(&a.peer, j.id).await.unwrap();
        if st.layout_digest == Some(v2.digest()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A never saw J announce v2: {:?}",
            st.layout_digest
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A layout without J: A drops it.
    let v3 = v2
        .with_changes(&[LayoutChange::Remove { id: j.id }])
        .unwrap()
        .settled();
    a.peer.send(changed(v3)).await.unwrap();
    assert!(
        status_of(&a.peer, j.id).await.is_none(),
        "a removed member must be dropped"
    );
}
