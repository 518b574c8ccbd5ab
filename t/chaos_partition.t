#!/usr/bin/perl

# A real network partition: three nodes in their own network namespaces,
# joined through a hub (Test::Nginx::Netns), split 1+2 with writes on both
# sides, then healed. Each side keeps syncing within itself; after the
# heal every node holds the same contents, the newest write of each key
# wins whichever side made it, and no acknowledged write is lost unless a
# newer one superseded it.
#
# Root only (namespaces, veth pairs): skipped with the reason elsewhere.
# The longer scenarios (delay and loss, a flapping link) are in t/chaos/,
# run by scripts/chaos.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Chaos;

###############################################################################

my $ch = Test::Nginx::Chaos->new(3, plan => 12, timeout => '2s');

my @ALL = (0, 1, 2);

# before: every key known everywhere
$ch->post(0, before => 'b0');
$ch->post(0, c1 => 'old');
$ch->post(1, c2 => 'old');
$ch->post(2, gone => 'x');
$ch->post(2, back => 'x');
ok($ch->converged(@ALL), 'before the partition: all nodes agree');

my $t_cut = time;
$ch->net->partition([0], [1, 2]);
# both sides see the other's silence and drop the connections
ok($ch->wait_online(0, 0) && $ch->wait_online(1, 1)
	&& $ch->wait_online(2, 1), 'partitioned: node 0 alone, 1 and 2 together');
my $t_seen = time - $t_cut;

# writes on both sides; on the conflicting keys the later write is on the
# minority side for c1 and on the majority side for c2
$ch->post(0, only0 => 'a');
$ch->post(1, only1 => 'b');
$ch->post(2, only2 => 'c');
$ch->patch(1, c1 => 'majority');
$ch->patch(0, c1 => 'minority');           # newer: wins
$ch->patch(0, c2 => 'minority');
$ch->patch(2, c2 => 'majority');           # newer: wins
$ch->del(0, 'gone');                       # a delete on the small side
$ch->del(1, 'back');
$ch->patch(0, back => 'revived');          # newer than the delete: wins
$ch->patch(0, before => 'b1');

ok($ch->converged(1, 2), 'the majority side syncs within itself');
is($ch->value(1, 'only0'), undef, 'nothing crosses the partition');
is($ch->value(0, 'only1'), undef, 'nothing crosses the partition (back)');

my $t_heal = time;
$ch->net->heal;
ok($ch->wait_online($_, 2), "healed: node $_ reconnects") for @ALL;
ok($ch->converged(@ALL), 'after the heal: all nodes agree');
diag(sprintf "partition: seen by all nodes %.1f s after the cut (zone_sync_"
	. "timeout 2s); %d acknowledged writes; all nodes agreed %.1f s after"
	. " the heal", $t_seen, $ch->acked, time - $t_heal);

my $want = $ch->expected;
is($want->{c1}, 'minority', 'model: newest write of c1');
is($want->{c2}, 'majority', 'model: newest write of c2');
is_deeply($ch->contents(0), $want,
	'no acknowledged write lost, newest wins, deletes kept');

###############################################################################
