#!/usr/bin/perl

# A slow, lossy network: three nodes in network namespaces whose every
# frame is delayed 100 ms each way (200 ms round trip), with up to 5 ms of
# jitter (so some frames are reordered), and 5 % of the frames lost in each
# direction. Writes on every node still reach every other node, the
# contents converge to the newest acknowledged writes, and records_pending
# returns to 0 everywhere.
#
# Root only; run by scripts/chaos (CHAOS_WRITES: writes, default 200).

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);

use FindBin;
use lib "$FindBin::Bin/../lib";

use Test::Nginx;
use Test::Nginx::Chaos;
use Test::Nginx::Util qw(wait_for);

###############################################################################

my $writes = $ENV{CHAOS_WRITES} // 200;
my $ch = Test::Nginx::Chaos->new(3, plan => 6, timeout => '5s',
	converge_timeout => 120);

$ch->net->impair(delay => 100, jitter => 5, loss => 5);
my $rtt = $ch->connect_time(0, 1);
ok(defined $rtt && $rtt >= 0.2, 'a round trip takes 200 ms')
	or diag('connect time: ' . ($rtt // 'failed'));
ok($ch->wait_online($_, 2, 60), "node $_ connected over the lossy links")
	for 0 .. 2;

my $t0 = time;
for my $n (1 .. $writes) {
	my $i = $n % 3;
	my $k = 'k' . ($n % 50);
	my $m = $n % 7;
	if ($m == 0) { $ch->del($i, $k) }
	elsif (!exists $ch->expected->{$k}) { $ch->post($i, $k => "v$n") }
	else { $ch->patch($i, $k => "v$n") }
}
my $t_writes = time - $t0;

my $same = $ch->converged;
my $t_conv = time - $t0;
ok($same && eq_hash($ch->contents(0), $ch->expected),
	'every node holds the newest acknowledged writes');
my $drained = wait_for(sub { !grep { $ch->pending($_) != 0 } 0 .. 2 },
	timeout => 60, name => 'records_pending 0');
ok($drained, 'records_pending back to 0 on every node');
diag(sprintf "netem: %d writes (%d acknowledged) in %.1f s, all nodes"
	. " agreed %.1f s after the first, pending 0 at %.1f s", $writes,
	$ch->acked, $t_writes, $t_conv, time - $t0);

###############################################################################
