#!/usr/bin/perl

# sync_limit_req and wall-clock steps: node 0's wall clock (libfaketime,
# its offset read from a file at every call, the monotonic clock left
# alone) is stepped forwards two hours, back four hours, and back 30 s
# more while keys are limited. Every bucket must keep draining at the
# real rate: not forgotten (a fresh burst) nor frozen (over-limited), on
# node 0 and on node 1, which counts node 0's shares.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Time::HiRes qw/ time sleep /;

use Test::Nginx;
use Test::Nginx::Cluster;

###############################################################################

my $faketime = (grep { -e } glob('/usr/lib/*/faketime/libfaketime.so.1'))[0];
plan(skip_all => 'libfaketime not installed') unless $faketime;

my $c = Test::Nginx::Cluster->new(2)->has(qw/http stream zone_sync/)->plan(20);

$c->write_file_expand(<<'EOF');

%%TEST_GLOBALS%%

env LD_PRELOAD;
env FAKETIME_TIMESTAMP_FILE;
env FAKETIME_NO_CACHE;
env FAKETIME_DONT_FAKE_MONOTONIC;

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
        %%OTHER_SYNC_SERVERS%%
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 100ms;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    # a request drains in 6 s
    sync_limit_req_zone $http_x_key zone=rl:1m rate=10r/m sync;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /rl { sync_limit_req zone=rl burst=2 nodelay; empty_gif; }
        location /time { return 200 "[$msec]"; }
        location /api/ { api; }
    }
}

EOF

my $clock = $c->node(0)->testdir() . '/faketime';
step('+0');
{
	local $ENV{LD_PRELOAD} = $faketime;
	local $ENV{FAKETIME_TIMESTAMP_FILE} = $clock;
	local $ENV{FAKETIME_NO_CACHE} = 1;
	local $ENV{FAKETIME_DONT_FAKE_MONOTONIC} = 1;
	$c->run();
}

###############################################################################

ok(wait_for(sub { (status(0)->{status}{nodes_online} // 0) == 1
	&& (status(1)->{status}{nodes_online} // 0) == 1 }, timeout => 10),
	'nodes connected');

# a step forwards: the bucket is not drained at once

my $t = fill('fwd');
ok($t && known(1, 1), 'key filled on node 0, known on node 1');
ok(step('+7200'), 'node 0 two hours ahead');
is(code(0, 'fwd'), 503, 'forward step: still limited on node 0');
is(code(1, 'fwd'), 503, 'forward step: still limited on node 1');
drains(0, 'fwd', $t, 'forward step');

# a step back over a minute: the key is not forgotten (the expiry sweep
# runs every second) nor frozen

$t = fill('back');
ok($t && known(1, 2), 'key filled, known on node 1');
ok(step('-7200'), 'node 0 stepped back four hours');
ok(stays_limited(0, 'back', 2.5), 'backward step: not forgotten on node 0');
is(code(1, 'back'), 503, 'backward step: still limited on node 1');
drains(0, 'back', $t, 'backward step');

# node 0's shares, made after the step, count on node 1 as they are

$t = fill('peer');
ok($t && known(1, 3), 'share of a node whose clock went back reaches node 1');
is(code(1, 'peer'), 503, 'and limits there');

# a step back under a minute: the bucket does not stop draining

$t = fill('small');
ok(step('-7230'), 'node 0 stepped back 30 s');
is(code(0, 'small'), 503, 'small backward step: still limited');
drains(0, 'small', $t, 'small backward step');

###############################################################################

sub code {
	my ($i, $key) = @_;
	my $r = http("GET /rl HTTP/1.0\r\nHost: localhost\r\nX-Key: $key\r\n\r\n",
		port => $c->http_port($i)) // '';
	return $r =~ m!^HTTP/1\.. (\d+)! ? $1 : 0;
}

sub status {
	my ($i) = @_;
	my (undef, $d) = http_json($c->node($i), GET => '/api/9/stream/zone_sync/');
	return ref $d eq 'HASH' ? $d : {};
}

# node $i holds $n keys of the zone
sub known {
	my ($i, $n) = @_;
	return wait_for(sub {
		(status($i)->{zones}{rl}{records_total} // 0) >= $n
	}, timeout => 10);
}

# node 0's wall clock, in seconds
sub wall {
	my $r = $c->http_get(0, '/time') // '';
	return $r =~ /\[([\d.]+)\]/ ? $1 : 0;
}

# sets node 0's clock offset and waits until it reads the new time
sub step {
	my ($offset) = @_;
	$c->node(0)->write_file('faketime', "$offset\n");
	return 1 if $offset eq '+0';
	return wait_for(sub { abs(wall() - time() - $offset) < 5 }, timeout => 10);
}

# fills $key's bucket on node 0 (burst 2: three admitted, the fourth
# not); returns when, or 0
sub fill {
	my ($key) = @_;
	my $codes = join(' ', map { code(0, $key) } 1 .. 4);
	my $t = time();
	is($codes, '200 200 200 503', "$key: bucket filled");
	return $codes eq '200 200 200 503' ? $t : 0;
}

sub stays_limited {
	my ($i, $key, $secs) = @_;
	my $end = time() + $secs;
	while (time() < $end) {
		return 0 if code($i, $key) != 503;
		sleep(0.2);
	}
	return 1;
}

# the bucket filled at $t admits again once a request has drained (6 s),
# not much earlier nor much later
sub drains {
	my ($i, $key, $t, $what) = @_;
	my $ok = wait_for(sub { code($i, $key) == 200 }, timeout => 12,
		interval => 0.2);
	my $after = time() - $t;
	ok($ok && $after > 4, sprintf('%s: admits again after %.1f s (6 s)',
		$what, $after));
}

###############################################################################
