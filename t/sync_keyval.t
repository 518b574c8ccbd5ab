#!/usr/bin/perl

# keyval zones synced between nodes: http and stream zones converge on 2
# and 3 nodes, concurrent writes settle on one value, deletes propagate,
# a late joiner and a restarted node catch up, a zone declared on one node
# only is ignored.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Stream qw/ stream /;
use Test::Nginx::Cluster;

###############################################################################

my $c = Test::Nginx::Cluster->new(3)->has(qw/http stream zone_sync/)->plan(16);

my $template = <<'EOF';

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    keyval_zone zone=s:1m sync;
    keyval "skey" $sv zone=s;

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
        %%ALL_SYNC_SERVERS%%
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 200ms;
    }

    server {
        listen 127.0.0.1:%%NODE_PORT_82%%;
        set $sv "stream-%%NODE%%";
        return "set\n";
    }

    server {
        listen 127.0.0.1:%%NODE_PORT_83%%;
        return "[$sv]\n";
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone zone=h:1m sync;
    keyval $arg_k $hv zone=h;
    @LONELY@

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /set { set $hv $arg_v; return 200 "ok"; }
        location /get { return 200 "[$hv]"; }
    }
}

EOF

$c->write_file_expand(sub {
	my ($i) = @_;
	my $conf = $template;

	# node 0 alone declares a synced zone "lonely"
	my $lonely = $i == 0 ? 'keyval_zone zone=lonely:1m sync;' : '';
	$conf =~ s/\@LONELY\@/$lonely/;
	return $conf;
});

$c->run();

###############################################################################

sub get {
	my ($i, $k) = @_;
	my $r = $c->http_get($i, "/get?k=$k") // '';
	return $r =~ /\[(.*)\]/ ? $1 : undef;
}

sub set {
	my ($i, $k, $v) = @_;
	$c->http_get($i, "/set?k=$k&v=$v");
}

sub everywhere {
	my ($k, $v, @nodes) = @_;
	@nodes = (0 .. 2) unless @nodes;
	return wait_for(sub {
		for my $i (@nodes) {
			my $got = get($i, $k);
			return 0 unless defined $got && $got eq $v;
		}
		return 1;
	}, timeout => 10);
}

sub sget {
	my ($i) = @_;
	my $s = stream('127.0.0.1:' . $c->port($i, 83));
	my $r = $s->read() // '';
	return $r =~ /\[(.*)\]/ ? $1 : undef;
}

# http zone, 3 nodes

set(0, 'k1', 'one');
ok(everywhere('k1', 'one'), 'write on node 0 reaches nodes 1 and 2');

set(2, 'k1', 'two');
ok(everywhere('k1', 'two'), 'overwrite on node 2 reaches nodes 0 and 1');

# stream zone

stream('127.0.0.1:' . $c->port(1, 82))->read();
ok(wait_for(sub { (sget(0) // '') eq 'stream-1' && (sget(2) // '') eq 'stream-1' },
	timeout => 10), 'stream zone: write on node 1 reaches nodes 0 and 2');

# concurrent writes of one key settle on one value everywhere

for my $round (1 .. 5) {
	set(0, "c$round", "from0");
	set(1, "c$round", "from1");
	set(2, "c$round", "from2");
}
my $settled = 1;
for my $round (1 .. 5) {
	$settled &&= wait_for(sub {
		my %seen = map { (get($_, "c$round") // 'undef') => 1 } 0 .. 2;
		my @v = keys %seen;
		return @v == 1 && $v[0] =~ /^from\d$/;
	}, timeout => 10);
}
ok($settled, 'concurrent writes converge to one value on every node');

# deletes propagate as tombstones

set(0, 'gone', 'here');
ok(everywhere('gone', 'here'), 'key to delete is everywhere');
$c->http_get(1, '/set?k=gone&v=');
ok(everywhere('gone', ''), 'delete on node 1 removes the key everywhere');

# a late joiner (a restarted node, its zone empty) gets everything

$c->stop_node(2);
set(0, 'late', 'joiner');
is(get(0, 'late'), 'joiner', 'written while node 2 is down');
$c->start_node(2);
ok(everywhere('late', 'joiner', 2), 'restarted node 2 receives the new key');
ok(everywhere('k1', 'two', 2), 'and the older ones');
ok(everywhere('gone', '', 2), 'and the delete');

# the restarted node is reconnected to: its writes reach the others

set(2, 'back', 'again');
ok(everywhere('back', 'again'), 'restarted node writes reach the others');

# a zone declared on node 0 only is ignored by the others

like($c->node(1)->read_file('error.log'),
	qr/zone_sync: node .* connected, 2 zone\(s\) shared/,
	'node 1 shares the 2 common zones with node 0');
unlike(join('', map { $c->node($_)->read_file('error.log') } 0 .. 2),
	qr/\[error\].*zone_sync: .*(protocol|lonely)/,
	'no errors about the zone only node 0 has');

set(0, 'after', 'lonely');
ok(everywhere('after', 'lonely'), 'sync goes on');

# a record that cannot fit one zone_sync_buffers buffer (one page by
# default) is refused at write time, with an error naming the key

set(0, 'big', 'x' x 5000);
like($c->node(0)->read_file('error.log'),
	qr/\[error\].*keyval zone "h": could not store key "big": record is larger than a "zone_sync_buffers" buffer/,
	'oversized record refused and logged');
is(get(0, 'big'), '', 'oversized record not stored');

###############################################################################
