#!/usr/bin/perl

# sync_limit_req on 3 nodes: the cluster as a whole admits the zone's rate
# wherever the requests land (rate=20r/s burst=0 nodelay, a client sending
# 60 r/s round-robin for 5 s), while the same zone without "sync" admits
# it on every node; a node partitioned away (its links cut by a proxy)
# keeps limiting alone, and once it is back the cluster total is within
# bounds again.
#
# The figures are printed as "# figures: ..." lines (prove -v, or
# scripts/limit-req-accuracy).

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw/ time sleep /;

use Test::Nginx;
use Test::Nginx::Cluster;

###############################################################################

my $c = Test::Nginx::Cluster->new(3)->has(qw/http stream zone_sync/)->plan(10);

# Links from and to node 2 go through a proxy that can cut them: node i
# reaches node j (one of them node 2) at port(i, 90 + j).
my @links;
for my $i (0 .. 2) {
	for my $j (0 .. 2) {
		next if $i == $j || ($i != 2 && $j != 2);
		push @links, [ $c->port($i, 90 + $j), $c->sync_port($j) ];
	}
}

$c->write_file_expand(sub {
	my ($i) = @_;
	my $servers = '';
	for my $j (0 .. 2) {
		my $p = ($i == $j || ($i != 2 && $j != 2))
			? $c->sync_port($j) : $c->port($i, 90 + $j);
		$servers .= "        zone_sync_server 127.0.0.1:$p;\n";
	}
	return <<"EOF";

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
$servers
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 100ms;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    sync_limit_req_zone \$http_x_key zone=rl:1m rate=20r/s sync;
    sync_limit_req_zone \$http_x_key zone=local:1m rate=20r/s;
    sync_limit_req_zone \$http_x_key zone=slow:1m rate=1r/m sync;

    keyval_zone zone=probe:1m sync;
    keyval \$arg_k \$probe zone=probe;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /rl { sync_limit_req zone=rl nodelay; empty_gif; }
        location /local { sync_limit_req zone=local nodelay; empty_gif; }
        location /slow { sync_limit_req zone=slow burst=3 nodelay; empty_gif; }

        location /set { set \$probe \$arg_v; return 200 "ok"; }
        location /get { return 200 "[\$probe]"; }
    }
}

EOF
});

my $cut = $c->node(0)->testdir() . '/cut';
$c->run_daemon(\&proxy, $cut, @links);
$c->node(0)->waitforsocket("127.0.0.1:$_->[0]") for @links;

$c->run();

###############################################################################

# connected: a write on every node is read on every other one
ok(connected(0 .. 2), 'cluster connected');

# one node's admissions count on another: node 0 fills the bucket
# (burst=3, 1r/m), node 1 then admits fewer than it would alone
is(join(' ', map { code(0, '/slow', 's') } 1 .. 4), '200 200 200 200',
	'node 0 fills the bucket');
my $own = 0;
ok(wait_for(sub { code(1, '/slow', 's') == 503 || !++$own }, timeout => 10)
	&& $own < 4, "node 1 counts node 0's requests ($own admitted)");

# accuracy: 60 r/s round-robin over 3 nodes for 5 s, rate=20r/s burst=0

my %ok = blast('/rl', 'acc', 60, 5, 0 .. 2);
my $total = sum(values %ok);
figures('accuracy, sync', 100, %ok);
ok($total >= 90 && $total <= 115,
	"cluster admits 90-115 % of rate x duration ($total of 100)");

%ok = blast('/local', 'acc', 60, 5, 0 .. 2);
my $local = sum(values %ok);
figures('accuracy, no sync', 100, %ok);
ok($local >= 150, "without sync the cluster admits far more ($local)");

# partition: node 2 is cut off

$c->node(0)->write_file('cut', '');
ok(wait_for(sub { disconnects(2) >= 2 && disconnects(0) >= 1
	&& disconnects(1) >= 1 }, timeout => 10), 'node 2 cut off');

# each side limits alone: node 2 gets 40 r/s, nodes 0 and 1 40 r/s between
# them, for 3 s: each side admits about rate x 3 s
%ok = blast('/rl', 'part', 80, 3, 2, 0, 2, 1);
figures('partitioned, node 2 alone', 60, 2 => $ok{2} // 0);
figures('partitioned, nodes 0 and 1', 60, map { $_ => $ok{$_} // 0 } 0, 1);
my $apart = ($ok{0} // 0) + ($ok{1} // 0);
ok(($ok{2} // 0) >= 48 && ($ok{2} // 0) <= 69,
	'partitioned node keeps limiting alone (' . ($ok{2} // 0) . ' of 60)');
ok($apart >= 48 && $apart <= 69, "the other two limit together ($apart of 60)");

# rejoin

unlink $cut;
ok(connected(0 .. 2), 'node 2 back');

%ok = blast('/rl', 'part', 60, 4, 0 .. 2);
$total = sum(values %ok);
figures('after rejoin', 80, %ok);
ok($total >= 72 && $total <= 92,
	"after rejoin the cluster admits 90-115 % again ($total of 80)");

###############################################################################

sub code {
	my ($i, $uri, $key) = @_;
	my $r = http("GET $uri HTTP/1.0\r\nHost: localhost\r\nX-Key: $key\r\n\r\n",
		port => $c->http_port($i)) // '';
	return $r =~ m!^HTTP/1\.. (\d+)! ? $1 : 0;
}

# Sends $rate requests a second for $secs seconds, round-robin over
# @nodes, on schedule; returns node => admitted.
sub blast {
	my ($uri, $key, $rate, $secs, @nodes) = @_;
	my %ok;
	my $n = int($rate * $secs);
	my $t0 = time();
	for my $k (0 .. $n - 1) {
		my $wait = $t0 + $k / $rate - time();
		sleep($wait) if $wait > 0;
		my $i = $nodes[$k % @nodes];
		$ok{$i}++ if code($i, $uri, $key) == 200;
	}
	my $late = time() - $t0 - ($n - 1) / $rate;
	diag(sprintf('client behind schedule by %.0f ms', $late * 1000))
		if $late > 0.1;
	return %ok;
}

sub figures {
	my ($what, $ideal, %ok) = @_;
	my $total = sum(values %ok);
	note(sprintf('figures: %s: admitted %d, %.1f %% of %d (%s)', $what,
		$total, 100 * $total / $ideal, $ideal,
		join(', ', map { "node $_: " . ($ok{$_} // 0) } sort keys %ok)));
}

sub sum {
	my $s = 0;
	$s += $_ for @_;
	return $s;
}

my $probes = 0;

sub connected {
	my @nodes = @_;
	my $v = 'p' . ++$probes;
	return wait_for(sub {
		for my $i (@nodes) {
			$c->http_get($i, "/set?k=from$i&v=$v");
		}
		for my $i (@nodes) {
			for my $j (@nodes) {
				my $r = $c->http_get($j, "/get?k=from$i") // '';
				return 0 unless $r =~ /\[\Q$v\E\]/;
			}
		}
		return 1;
	}, timeout => 20);
}

sub disconnects {
	my ($i) = @_;
	my $log = $c->node($i)->read_file('error.log');
	return scalar(() = $log =~ /zone_sync: disconnected from node/g);
}

# A TCP proxy for @links ([listen port, target port]); while the file $cut
# exists it closes every connection and refuses new ones.
sub proxy {
	my ($cut, @links) = @_;
	local $SIG{PIPE} = 'IGNORE';
	my $sel = IO::Select->new();
	my (%target, %peer, %sock);
	for my $l (@links) {
		my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$l->[0]",
			Listen => 16, ReuseAddr => 1)
			or die "proxy: cannot listen on $l->[0]: $!\n";
		$target{$s} = $l->[1];
		$sel->add($s);
	}
	my $drop = sub {
		my ($s) = @_;
		my @pair = ($s, $peer{$s} // ());
		for my $x (@pair) {
			$sel->remove($x);
			delete $peer{$x};
			delete $sock{$x};
			close $x;
		}
	};
	for (;;) {
		my $is_cut = -e $cut;
		if ($is_cut) {
			my @all = values %sock;
			$drop->($_) for @all;
		}
		my @ready = $sel->can_read(0.02);
		for my $s (@ready) {
			if (my $to = $target{$s}) {
				my $a = $s->accept() or next;
				my $b = $is_cut ? undef
					: IO::Socket::INET->new(PeerAddr => "127.0.0.1:$to");
				unless ($b) {
					close $a;
					next;
				}
				$peer{$a} = $b;
				$peer{$b} = $a;
				$sock{$a} = $a;
				$sock{$b} = $b;
				$sel->add($a, $b);
				next;
			}
			next unless $sock{$s} && $peer{$s};
			my $n = sysread($s, my $buf, 65536);
			if (!$n) {
				$drop->($s);
				next;
			}
			my $o = $peer{$s};
			my $off = 0;
			while ($off < $n) {
				my $w = syswrite($o, $buf, $n - $off, $off);
				last unless defined $w;
				$off += $w;
			}
		}
	}
}

###############################################################################
