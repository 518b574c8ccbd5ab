#!/usr/bin/perl

# A cluster defined by one DNS name (zone_sync_server NAME:PORT resolve),
# answered by a DNS server the test controls: the cluster forms from the
# name, an address added to the answer joins and receives the full state,
# an address removed is disconnected and no longer retried, SERVFAIL,
# NXDOMAIN and timeouts keep the current set; the resolver's valid=, ipv6=
# and resolver_timeout are honoured.  Every node runs the same
# configuration, differing only in its listen addresses (127.0.0.1 ..
# 127.0.0.4, one port for all), and none connects to itself.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw/ time /;

use Test::Nginx;
use Test::Nginx::Cluster;
use Test::Nginx::DNS;

###############################################################################

my $c = Test::Nginx::Cluster->new(4)->has(qw/http stream zone_sync/);

eval { require Net::DNS; 1 } or plan(skip_all => 'Net::DNS not installed');

$c->plan(33);

# The same file on every node but for the node's address in "listen".
# The answers' TTL is an hour: only "valid=1s" makes nodes re-resolve.
$c->write_file_expand(sub {
	my ($i) = @_;
	my $conf = <<'EOF';

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    resolver 127.0.0.1:8053 valid=1s ipv6=off;
    resolver_timeout 5s;

    server {
        listen @ADDR@:%%PORT_8081%%;
        zone_sync;
        zone_sync_server cluster.test:%%PORT_8081%% resolve;
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 200ms;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=h:1m sync;
    keyval $arg_k $hv zone=h;

    server {
        listen @ADDR@:%%PORT_8080%%;

        location /set { set $hv $arg_v; return 200 "ok"; }
        location /get { return 200 "[$hv]"; }
    }
}

EOF
	my $addr = addr($i);
	$conf =~ s/\@ADDR\@/$addr/g;
	return $conf;
});

my $dns = Test::Nginx::DNS->new($c);

my $P = port(8081);

###############################################################################

sub addr { '127.0.0.' . ($_[0] + 1) }
sub node { addr($_[0]) . ":$P" }

sub get {
	my ($i, $k) = @_;
	my $r = http_get("/get?k=$k", PeerAddr => addr($i) . ':' . port(8080))
		// '';
	return $r =~ /\[(.*)\]/ ? $1 : undef;
}

sub set {
	my ($i, $k, $v) = @_;
	http_get("/set?k=$k&v=$v", PeerAddr => addr($i) . ':' . port(8080));
}

sub on {
	my ($k, $v, @nodes) = @_;
	return wait_for(sub {
		!grep { (get($_, $k) // '') ne $v } @nodes
	}, timeout => 10);
}

sub log_of { $c->node($_[0])->read_file('error.log') // '' }

# the log of node $i from offset $from on
sub log_since {
	my ($i, $from) = @_;
	return substr(log_of($i), $from // 0);
}

sub log_size { length log_of($_[0]) }

# every node in @$nodes logged a line matching $re (after offsets %$from)
sub all_logged {
	my ($re, $nodes, $from, $timeout) = @_;
	return wait_for(sub {
		!grep { log_since($_, $from->{$_}) !~ $re } @$nodes
	}, timeout => $timeout // 10);
}

sub joined { qr/zone_sync: node \Q${\node($_[0])}\E joined the cluster \(DNS\)/ }
sub left { qr/zone_sync: node \Q${\node($_[0])}\E left the cluster \(DNS\)/ }

sub answer { $dns->set('cluster.test', A => [map { addr($_) } @_], AAAA => ['::1'], ttl => 3600) }

sub offsets { return { map { $_ => log_size($_) } 0 .. $c->size - 1 } }

###############################################################################

# same configuration everywhere

my @confs = map {
	my $conf = $c->node($_)->read_file('nginx.conf');
	my $dir = $c->node($_)->testdir;
	$conf =~ s/\Q$dir\E/DIR/g;
	$conf =~ s/^(\s*listen\s+)127\.0\.0\.\d+:/${1}ADDR:/mg;
	$conf;
} 0 .. 3;
ok(!grep({ $_ ne $confs[0] } @confs), 'nodes differ only in listen addresses');

# a 3-node cluster from one name

answer(0, 1, 2);
$c->start_node($_) for 0 .. 2;

ok(wait_for(sub {
	for my $i (0 .. 2) {
		my $log = log_of($i);
		return 0 if grep { $_ != $i && $log !~ joined($_) } 0 .. 2;
	}
	return 1;
}, timeout => 10), 'every node joins the two others of the answer');

set(0, 'k0', 'zero');
ok(on('k0', 'zero', 1, 2), 'write on node 0 reaches nodes 1 and 2');
set(2, 'k2', 'two');
ok(on('k2', 'two', 0, 1), 'write on node 2 reaches nodes 0 and 1');

my @self = grep {
	my $log = log_of($_);
	my $me = node($_);
	$log =~ joined($_) || $log =~ /connected to node \Q$me\E/
		|| $log =~ /is this node/;
} 0 .. 2;
is("@self", '', 'no node connects to itself');

is($dns->queries(type => 'AAAA'), 0, 'ipv6=off: no AAAA queries');
unlike(join('', map { log_of($_) } 0 .. 2), qr/node \[::1\]/,
	'ipv6=off: [::1] is no member');

# an address added to the answer: node 3, started before its address is
# in DNS, is connected to by everyone and receives the full state

$c->start_node(3);
set(3, 'k3', 'three');
ok(on('k3', 'three', 0, 1, 2), 'node 3, not yet in DNS, pushes its writes');
is(get(3, 'k0'), '', 'nobody pushes to node 3 yet');

my $from = offsets();
answer(0, 1, 2, 3);
ok(all_logged(joined(3), [0, 1, 2], $from), 'added address joins on every node');
ok(on('k0', 'zero', 3) && on('k2', 'two', 3),
	'new node receives the state written before it joined');
set(1, 'k1', 'one');
ok(on('k1', 'one', 0, 2, 3), 'and new writes');

# an address removed from the answer: disconnected, no longer written to

$from = offsets();
answer(0, 1, 3);
ok(all_logged(left(2), [0, 1, 3], $from), 'removed address leaves on every node');

set(0, 'gone', 'yes');
ok(on('gone', 'yes', 1, 3), 'write after the removal reaches the remaining nodes');
ok(!wait_for(sub { (get(2, 'gone') // '') eq 'yes' }, timeout => 1),
	'but not the removed node');

# ... and never retried: in its place, a listener nobody connects to

$c->stop_node(2);
my $ls = IO::Socket::INET->new(LocalAddr => addr(2), LocalPort => $P,
	Listen => 16, ReuseAddr => 1) or die "listen on " . node(2) . ": $!";

is(accepted($ls, 1), 0, 'removed address is not retried');

$from = offsets();
answer(0, 1, 2, 3);
ok(accepted($ls, 10, 1), 'back in the answer: connected to again');
ok(all_logged(joined(2), [0, 1, 3], $from), 'and logged as joined');
close $ls;

$c->start_node(2);
ok(on('gone', 'yes', 2), 'returning node receives what it missed');

# resolution failures keep the current set

my %fail = (
	SERVFAIL => 'Server failure',
	NXDOMAIN => 'Host not found',
	TIMEOUT => 'Operation timed out',
	EMPTY => 'Host not found',
);

# EMPTY: NOERROR without addresses; after TIMEOUT, so that its message
# differs from the previous one (a repeated failure is logged once)
for my $rcode (qw/ SERVFAIL NXDOMAIN TIMEOUT EMPTY /) {
	$from = offsets();
	$dns->set('cluster.test', $rcode eq 'EMPTY' ? (A => []) : (rcode => $rcode));
	my $msg = qr/\[error\].*zone_sync: could not resolve "cluster\.test": \Q$fail{$rcode}\E, keeping the current 3 node\(s\)/;

	# TIMEOUT: a query goes unanswered for resolver_timeout (5s); the
	# default, 30s, would not do
	ok(all_logged($msg, [0 .. 3], $from, 15), "$rcode: logged, set kept");

	if ($rcode eq 'SERVFAIL') {
		# retried each second, reported once
		my $node = 0;
		wait_for(sub {
			my @l = log_since($node, $from->{$node})
				=~ /resolve: "cluster\.test" A /g;
			@l >= 4;
		}, timeout => 10);
		my @n = log_since($node, $from->{$node}) =~ /$msg/g;
		is(scalar @n, 1, 'SERVFAIL: retried, logged once');
	}

	set(1, "f$rcode", 'kept');
	ok(on("f$rcode", 'kept', 0, 2, 3) && !grep({ log_since($_, $from->{$_}) =~ /left the cluster/ } 0 .. 3),
		"$rcode: cluster still syncs, nobody left");
}

# a lookup in progress does not hold up the worker's exit: node 1 stops
# right after starting a lookup that takes resolver_timeout (5s) to fail

$dns->set('cluster.test', rcode => 'TIMEOUT');
my $at = log_size(1);
wait_for(sub { log_since(1, $at) =~ /resolve: "cluster\.test"/ }, timeout => 10);
my $t0 = time();
$c->stop_node(1);
cmp_ok(time() - $t0, '<', 3, 'stop not delayed by a DNS lookup in progress');

# node 1 starts while DNS does not answer: no members, until it does

$c->start_node(1);
$from = offsets();
answer(0, 1, 2, 3);
ok(all_logged(qr/zone_sync: "cluster\.test" resolves again/, [0, 2, 3], $from, 15),
	'recovery logged');
ok(!grep({ !all_logged(joined($_), [1], $from, 15) } 0, 2, 3),
	'node started during the outage joins once DNS answers');
set(1, 'back', 'online');
ok(on('back', 'online', 0, 2, 3), 'and syncs');

# re-resolution goes on after failures

$from = offsets();
answer(0, 1, 2);
ok(all_logged(left(3), [0, 1, 2], $from), 'a later change still applies');

###############################################################################

# Accepts connections on $ls for $timeout seconds (until the first one
# with $first): how many arrived.
sub accepted {
	my ($ls, $timeout, $first) = @_;
	my $sel = IO::Select->new($ls);
	my $deadline = time() + $timeout;
	my $n = 0;
	while ((my $left = $deadline - time()) > 0) {
		next unless $sel->can_read($left);
		my $s = $ls->accept() or next;
		close $s;
		$n++;
		last if $first;
	}
	return $n;
}

###############################################################################
