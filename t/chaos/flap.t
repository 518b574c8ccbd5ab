#!/usr/bin/perl

# A flapping link: the link between nodes 0 and 1 goes down and up every
# second for a minute (CHAOS_FLAP_SECONDS), while writes go on on every
# node. Afterwards the nodes agree on the newest acknowledged writes, and
# nothing leaked on any node: established connections, open files and
# active nginx timers (event timer add minus del, from the debug log) are
# back to their level after warm-up, worker memory within 10 % of it, and
# the nginx timers fire no more often than at rest after warm-up (see
# timer_rate in Test::Nginx::Chaos for why not a count).
#
# Root only; run by scripts/chaos.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);

use FindBin;
use lib "$FindBin::Bin/../lib";

use Test::Nginx;
use Test::Nginx::Chaos;
use Test::Nginx::Util qw(wait_for);

###############################################################################

my $seconds = $ENV{CHAOS_FLAP_SECONDS} // 60;
my $ch = Test::Nginx::Chaos->new(3, plan => 17, timeout => '600ms');

my $n = 0;
sub write_some {
	$n++;
	my $i = $n % 3;
	my $k = 'k' . ($n % 40);
	if ($n % 9 == 0) { $ch->del($i, $k) }
	elsif (!exists $ch->expected->{$k}) { $ch->post($i, $k => "v$n") }
	else { $ch->patch($i, $k => "v$n") }
}

# warm-up: records in the zone, and one cut and heal of the link, so that
# everything allocated on first use is allocated
write_some() for 1 .. 100;
$ch->net->cut(0, 1);
$ch->wait_online(0, 1);
$ch->net->heal;
ok($ch->wait_online($_, 2), "warm-up: node $_ connected") for 0 .. 2;
$ch->converged;
my @base = map { $ch->worker_stats($_) } 0 .. 2;
my @rate = map { $ch->timer_rate($_, 3) } 0 .. 2;

# with zone_sync_timeout 600ms each second down closes the connection
# between 0 and 1 (seen as nodes_online 1 on node 0), each second up
# brings it back
my ($t0, $flaps, $down, $drops, $was) = (time, 0, 0, 0, 2);
while (time - $t0 < $seconds) {
	my $tick = time;
	$down = !$down;
	$down ? $ch->net->cut(0, 1) : $ch->net->heal;
	$flaps++;
	while (time - $tick < 1) {
		write_some();
		my $on = $ch->online(0);
		$drops++ if $on < 2 && $was == 2;
		$was = $on;
		sleep(0.1);
	}
}
$ch->net->heal;

ok($drops >= $flaps / 4, "the link flapped: node 0 lost node 1 $drops times");
ok($ch->wait_online($_, 2), "after flapping: node $_ connected") for 0 .. 2;
ok($ch->converged && eq_hash($ch->contents(0), $ch->expected),
	'every node holds the newest acknowledged writes');

for my $i (0 .. 2) {
	my $b = $base[$i];
	my $s;
	# closed connections and their timers go away within a timeout
	my $settled = wait_for(sub {
		$s = $ch->worker_stats($i);
		$s->{conns} <= $b->{conns} && $s->{fds} <= $b->{fds};
	}, timeout => 15, name => "node $i settles");
	ok($settled, "node $i: no connection or file leaked");
	my $r;
	ok(wait_for(sub { $r = $ch->timer_rate($i, 3); $r <= $rate[$i] * 1.5 + 2 },
		timeout => 30, name => "node $i timers"),
		"node $i: timers back to their rate at rest");
	ok($s->{rss_kb} <= $b->{rss_kb} * 1.1, "node $i: worker memory within 10 %");
	diag(sprintf "flap: node %d after %d flaps: conns %d -> %d, fds %d -> %d,"
		. " rss %d -> %d KiB, timer events %.1f/s -> %.1f/s", $i, $flaps,
		(map { ($b->{$_}, $s->{$_}) } qw/conns fds rss_kb/), $rate[$i], $r);
}
diag(sprintf "flap: %d writes, %d acknowledged, %d disconnections seen",
	$n, $ch->acked, $drops);

###############################################################################
