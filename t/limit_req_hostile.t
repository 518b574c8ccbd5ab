#!/usr/bin/perl

# sync_limit_req and a hostile peer: a node claims an enormous share of a
# key's bucket (2^60 thousandths of a request). The share is clamped to
# what a location using the zone can accumulate (the largest burst plus
# one request), so the key is limited at most as long as a full bucket
# would be, then passes again; the node's snapshots carry the clamped
# share, and nothing once the bucket has drained.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Time::HiRes qw/ time sleep /;

use Test::Nginx;
use Test::Nginx::Cluster;
use Test::Nginx::SyncPeer;
use Test::Nginx::ZoneSync qw/zs_now_hlc/;

###############################################################################

my $c = Test::Nginx::Cluster->new(1)->has(qw/http stream zone_sync/)->plan(8);

# The node syncs with a scripted peer listening on port k=90 (when the
# test listens there); the hostile peer connects to the node's sync port.
$c->write_file_expand(<<'EOF');

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
        zone_sync_server 127.0.0.1:%%NODE_PORT_90%%;
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 100ms;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /a { sync_limit_req zone=rl burst=2 nodelay; empty_gif; }
        location /b { sync_limit_req zone=rl burst=4 nodelay; empty_gif; }
        location /c { sync_limit_req zone=rl burst=1 nodelay; empty_gif; }
    }

    # declared after its users: the zone still learns their largest burst
    sync_limit_req_zone $http_x_key zone=rl:1m rate=1r/s sync;
}

EOF

$c->run();

###############################################################################

# rate=1r/s, largest burst 4: a share may hold 4 requests, plus the one
# admitted at the burst, plus 2 ms of the rate (the synced zone's slack),
# in thousandths of a request
my $cap = 4000 + 1000 + 2;
my $drain = $cap / 1000;        # seconds for such a share to drain
my $hostile = 0xbad0bad;
my $sync = '127.0.0.1:' . $c->sync_port(0);

# the zone as the node offers it (kind 2); kind_version 1 dated shares
# with the wall clock, 2 sends their age
my ($rl) = grep { $_->[0] eq 'rl' } @{Test::Nginx::SyncPeer->probe($sync)};
ok($rl && $rl->[1] == 2, 'node offers the limit_req zone');
my $kv = $rl ? $rl->[2] : 2;

sub share {
	my ($milli) = @_;
	return pack('Q> Q>', $milli, $kv >= 2 ? 0 : int(time() * 1000));
}

my $p = Test::Nginx::SyncPeer->connect($sync, node_id => $hostile,
	zones => [ [ 'rl', 2, $kv ] ]);
my $hlc = zs_now_hlc();
my $seq = $p->send_records('rl', 2, $kv, [
	map { { key => $_, value => share(1 << 60), hlc => $hlc,
		origin => $hostile } } qw/ victim idle /
]);
ok($p->wait_ack($seq), 'forged shares applied');
my $t0 = time();
$p->close;

is(code('/b', 'victim'), 503, 'the forged share limits the key');

# the node's snapshot to a peer carries the share, clamped

my $forged = forged_shares();
my @milli = map { $_->[1] } @{$forged // []};
ok(@milli == 2, 'snapshot carries the forged shares');
ok(@milli && !grep({ $_ > $cap } @milli), 'clamped to burst + 1 request ('
	. join(', ', @milli) . " <= $cap)");

# limited no longer than a full bucket: until the share has drained to
# the burst (1 s here), then at the rate; at most burst / rate (4 s)

ok(wait_for(sub { code('/b', 'victim') == 200 }, timeout => 4),
	sprintf('key passes again after %.1f s (1 s, at most 4 s)', time() - $t0));

# once the untouched key's bucket has drained the share is gone: not in
# snapshots, and the whole burst is available again (waiting for time to
# pass, not for sync)

my $left = $t0 + $drain + 0.2 - time();
sleep($left) if $left > 0;
$forged = forged_shares();
ok($forged && !grep({ $_->[0] eq 'idle' } @$forged),
	'drained share not in snapshots');
is(join(' ', map { code('/b', 'idle') } 1 .. 6), '200 200 200 200 200 503',
	'whole burst available again');

###############################################################################

sub code {
	my ($uri, $key) = @_;
	my $r = http("GET $uri HTTP/1.0\r\nHost: localhost\r\nX-Key: $key\r\n\r\n",
		port => $c->http_port(0)) // '';
	return $r =~ m!^HTTP/1\.. (\d+)! ? $1 : 0;
}

# the shares of the hostile origin in the node's next snapshot, as
# [key, thousandths], or undef if none came (we listen only meanwhile:
# the node's retries find us)
sub forged_shares {
	my $l = Test::Nginx::SyncPeer->listen('127.0.0.1:' . $c->port(0, 90));
	my $s = $l->accept(zones => [ [ 'rl', 2, $kv ] ]);
	$l->close;
	return undef unless $s;
	my $records = $s->snapshot;
	$s->close;
	return undef unless $records;
	return [ map { [ $_->{key}, (unpack('Q> Q>', $_->{value}))[0] ] }
		grep { $_->{origin} == $hostile } @$records ];
}

###############################################################################
